// Model registrations persist in a JSON file and survive a restart.
import test from "ava";
import path from "node:path";
import { readFile, writeFile } from "node:fs/promises";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { ModelSpecSchema } from "../../../src/gen/thaw/scheduler/v1/scheduler_pb.js";
import { ModelRegistry } from "../../../src/orchestrator/scheduler/model-registry.js";
import { tempDirs } from "../../fixtures/temp-dir.js";

const dirs = tempDirs("thaw-models-");
test.after.always(() => dirs.cleanup());

test("register, list, reopen, bytes, unregister", async (t) => {
  const file = path.join(await dirs.make(), "state", "models.json");
  const a = await ModelRegistry.open(file, () => 1000);
  const m = await a.register(create(ModelSpecSchema, { id: "org/b", keepAliveSeconds: 60 }));
  t.is(m.spec.source, "org/b");
  t.is(m.spec.revision, "main");
  t.is(m.spec.ownedBy, "thaw");
  await a.register(create(ModelSpecSchema, { id: "a", source: "/models/a", revision: "v1" }));
  await a.setBytes("a", 12345n);
  t.deepEqual(a.list().map((x) => x.spec.id), ["a", "org/b"]);

  const b = await ModelRegistry.open(file);
  t.deepEqual(b.list().map((x) => [x.spec.id, x.spec.source, x.spec.revision, x.spec.keepAliveSeconds, x.bytes, x.createdUnixMs]), [
    ["a", "/models/a", "v1", 0, 12345n, 1000],
    ["org/b", "org/b", "main", 60, 0n, 1000],
  ]);
  t.true(await b.unregister("a"));
  t.false(await b.unregister("a"));
  const c = await ModelRegistry.open(file);
  t.deepEqual(c.list().map((x) => x.spec.id), ["org/b"]);
  t.is(JSON.parse(await readFile(file, "utf8")).version, 1);
});

test("re-registering keeps the creation time and forgets the size when the source changes", async (t) => {
  let now = 1;
  const r = await ModelRegistry.open(undefined, () => now);
  await r.register(create(ModelSpecSchema, { id: "m", source: "x" }));
  await r.setBytes("m", 10n);
  now = 2;
  t.is((await r.register(create(ModelSpecSchema, { id: "m", source: "x", keepAliveSeconds: 5 }))).bytes, 10n);
  const moved = await r.register(create(ModelSpecSchema, { id: "m", source: "y" }));
  t.is(moved.bytes, 0n);
  t.is(moved.createdUnixMs, 1);
});

test("bad ids and revisions are INVALID_ARGUMENT; a corrupt file is a clear error", async (t) => {
  const r = await ModelRegistry.open(undefined);
  for (const id of ["", "../x", "a/b/c", "a--b"]) {
    const err = await t.throwsAsync(r.register(create(ModelSpecSchema, { id })));
    t.is((err as ConnectError).code, Code.InvalidArgument, id);
  }
  const err = await t.throwsAsync(r.register(create(ModelSpecSchema, { id: "ok", revision: "a/b" })));
  t.is((err as ConnectError).code, Code.InvalidArgument);
  const file = path.join(await dirs.make(), "models.json");
  await writeFile(file, "{nope");
  await t.throwsAsync(ModelRegistry.open(file), { message: /unreadable/ });
});
