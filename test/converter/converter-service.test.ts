// ConverterService over a real server on a loopback port, with a real LocalStore and the real
// conversion of the tiny model.
import test from "ava";
import { mkdtemp, readFile, rm, writeFile, mkdir } from "node:fs/promises";
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import os from "node:os";
import path from "node:path";
import { Code, ConnectError, type ConnectRouter } from "@connectrpc/connect";
import { ConvertPhase, ConverterService } from "../../src/gen/thaw/converter/v1/converter_service_pb.js";
import { LocalStore } from "../../src/store/local-store.js";
import { ConverterServiceImpl } from "../../src/converter/converter-service.js";
import converterRoutes, { converterDeps } from "../../src/converter/routes.js";
import { startServer } from "../../src/shared/server.js";
import { grpcClient } from "../../src/shared/clients.js";
import { makeTinyModel } from "../../src/tiny-model/tiny-model.js";
import { crc32c } from "../../src/native/checksum.js";

const run = promisify(execFile);

async function setup(t: import("ava").ExecutionContext) {
  const dir = await mkdtemp(path.join(os.tmpdir(), "thaw-converter-"));
  const models = path.join(dir, "models");
  await makeTinyModel(path.join(models, "tiny"));
  const store = await LocalStore.open(path.join(dir, "store"));
  let conversions = 0;
  const deps = converterDeps({ store, localRoots: [models] });
  const counting = { ...deps, convert: (...args: Parameters<typeof deps.convert>) => (conversions++, deps.convert(...args)) };
  const server = await startServer({
    routes: (router: ConnectRouter) => router.service(ConverterService, new ConverterServiceImpl(counting)),
  });
  t.teardown(async () => {
    await server.close();
    await rm(dir, { recursive: true, force: true });
  });
  return { dir, models, store, server, client: grpcClient(ConverterService, server.url), conversions: () => conversions };
}

test("convert streams progress and publishes; get, list, read and delete see it", async (t) => {
  const { models, store, client } = await setup(t);
  const phases: ConvertPhase[] = [];
  let index;
  for await (const p of client.convert({ source: path.join(models, "tiny"), modelId: "tiny" })) {
    phases.push(p.phase);
    if (p.phase === ConvertPhase.DONE) index = p.index;
  }
  t.is(phases.at(-1), ConvertPhase.DONE);
  t.true(phases.includes(ConvertPhase.WRITING));
  t.truthy(index);
  t.is(index!.modelKey, "tiny@main");

  const got = await client.getCheckpoint({ ref: { modelId: "tiny" } });
  t.is(got.index?.totalBytes, index!.totalBytes);
  const listed = await client.listCheckpoints({});
  t.deepEqual(listed.checkpoints.map((c) => c.modelKey), ["tiny@main"]);
  t.is(listed.checkpoints[0].tensorCount, index!.tensors.length);

  // Whole chunk through ReadChunk equals the stored file, and its CRC-32C matches the index.
  const chunk = index!.chunks[0];
  const pieces: Uint8Array[] = [];
  let expected = 0n;
  for await (const r of client.readChunk({ ref: { modelId: "tiny" }, fileName: chunk.fileName })) {
    t.is(r.offset, expected);
    t.is(r.fileLength, chunk.byteLength);
    expected += BigInt(r.data.byteLength);
    pieces.push(r.data);
  }
  const bytes = Buffer.concat(pieces);
  t.deepEqual(bytes, await readFile(path.join(store.localPath!("tiny@main"), chunk.fileName)));
  t.is(BigInt(await crc32c(bytes)), chunk.checksum!.value);

  // A resumed read from an odd offset returns exactly the rest of the range.
  const resumed: Uint8Array[] = [];
  for await (const r of client.readChunk({ ref: { modelId: "tiny" }, fileName: chunk.fileName, offset: 4097n, length: 10000n })) {
    resumed.push(r.data);
  }
  t.deepEqual(Buffer.concat(resumed), bytes.subarray(4097, 14097));

  // Side files and the index itself are served too: an agent whose only origin is the converter needs them.
  const readWhole = async (fileName: string) => {
    const parts: Uint8Array[] = [];
    for await (const r of client.readChunk({ ref: { modelId: "tiny" }, fileName })) parts.push(r.data);
    return Buffer.concat(parts);
  };
  const folder = store.localPath!("tiny@main");
  t.deepEqual(await readWhole("config.json"), await readFile(path.join(folder, "config.json")));
  t.deepEqual(await readWhole("model.idx"), await readFile(path.join(folder, "model.idx")));

  const deleted = await client.deleteCheckpoint({ ref: { modelId: "tiny" } });
  t.true(deleted.bytesFreed >= index!.totalBytes);
  const gone = await t.throwsAsync(client.getCheckpoint({ ref: { modelId: "tiny" } }));
  t.is((gone as ConnectError).code, Code.NotFound);
});

test("concurrent Convert calls for the same model share one conversion", async (t) => {
  const { models, client, conversions } = await setup(t);
  const convertOnce = async () => {
    let key = "";
    for await (const p of client.convert({ source: path.join(models, "tiny"), modelId: "tiny" })) {
      if (p.index) key = `${p.index.modelKey}/${p.index.createdUnixMs}`;
    }
    return key;
  };
  const keys = await Promise.all([convertOnce(), convertOnce(), convertOnce()]);
  t.is(conversions(), 1);
  t.is(new Set(keys).size, 1);
});

test("ReadChunk refuses names the index does not list, and offsets past the end", async (t) => {
  const { models, client } = await setup(t);
  for await (const _ of client.convert({ source: path.join(models, "tiny"), modelId: "tiny" }));
  const read = async (fileName: string, offset = 0n) => {
    for await (const _ of client.readChunk({ ref: { modelId: "tiny" }, fileName, offset }));
  };
  for (const name of ["../tiny@main/model.idx", "./model.idx", "/etc/passwd", "chunk-99999.bin", "model.safetensors"]) {
    t.is(((await t.throwsAsync(read(name))) as ConnectError).code, Code.NotFound, name);
  }
  t.is(((await t.throwsAsync(read("chunk-00000.bin", 1n << 40n))) as ConnectError).code, Code.OutOfRange);
  const escape = await t.throwsAsync(client.getCheckpoint({ ref: { modelId: "../../etc" } }));
  t.is((escape as ConnectError).code, Code.InvalidArgument);
});

test("bad sources fail with statuses a user can act on, and publish nothing", async (t) => {
  const { dir, models, client, store } = await setup(t);
  const convert = async (source: string, modelId = "") => {
    for await (const _ of client.convert({ source, modelId }));
  };
  const pickle = path.join(models, "pickle-only");
  await mkdir(pickle);
  await writeFile(path.join(pickle, "config.json"), "{}");
  await writeFile(path.join(pickle, "pytorch_model.bin"), "not read");
  const pickleErr = (await t.throwsAsync(convert(pickle))) as ConnectError;
  t.is(pickleErr.code, Code.FailedPrecondition);
  t.regex(pickleErr.message, /pickle|safetensors/i);

  const outside = await t.throwsAsync(convert(path.join(dir, "store")));
  t.true([Code.PermissionDenied, Code.InvalidArgument].includes((outside as ConnectError).code));

  const badId = await t.throwsAsync(convert(path.join(models, "tiny"), "../escape"));
  t.is((badId as ConnectError).code, Code.InvalidArgument);
  t.deepEqual(await store.list(), []);
});

test("thaw convert (CLI) converts a folder in-process and through a running converter", async (t) => {
  const { dir, models, server } = await setup(t);
  const cli = path.resolve("src/cli/thaw.js");
  const local = await run(process.execPath, [cli, "convert", path.join(models, "tiny"), "--store", path.join(dir, "cli-store")]);
  t.regex(local.stdout, /tiny@main: \d+ tensors in \d+ chunks/);
  const remote = await run(process.execPath, [cli, "convert", path.join(models, "tiny"), "--model-id", "tiny", "--converter", server.url]);
  t.regex(remote.stdout, /tiny@main: \d+ tensors/);
});

test("operators reach the converter through reflection (buf curl, no proto files)", async (t) => {
  const dir = await mkdtemp(path.join(os.tmpdir(), "thaw-converter-"));
  const server = await startServer({ routes: converterRoutes({ store: await LocalStore.open(dir) }) });
  t.teardown(async () => {
    await server.close();
    await rm(dir, { recursive: true, force: true });
  });
  const buf = ["buf", "curl", "--http2-prior-knowledge", "--protocol", "grpc"];
  const listed = await run("npx", [...buf, "--list-services", server.url]);
  t.true(listed.stdout.split("\n").includes("thaw.converter.v1.ConverterService"));
  const called = await run("npx", [...buf, "--data", "{}", `${server.url}/thaw.converter.v1.ConverterService/ListCheckpoints`]);
  t.deepEqual(JSON.parse(called.stdout), {});
});
