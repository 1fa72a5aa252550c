// gRPC server reflection (v1 and v1alpha) on the orchestrator's port: `buf curl` (ships with
// @bufbuild/buf) and grpcurl list services and call SchedulerService RPCs without proto files.
// grpcurl is used when it is on PATH or in $GOPATH/bin (install it beforehand with
// `go install github.com/fullstorydev/grpcurl/cmd/grpcurl@v1.9.3`); otherwise its test is skipped
// and counted as skipped. Nothing is installed, and nothing reaches the network, while tests are
// collected.
import test from "ava";
import { execFile, spawnSync } from "node:child_process";
import path from "node:path";
import { promisify } from "node:util";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { fromBinary } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import { Tier } from "../../src/gen/thaw/agent/v1/agent_pb.js";
import { ServerReflection } from "../../src/shared/reflection/gen/grpc/reflection/v1alpha/reflection_pb.js";
import { startOrchestrator, type RunningOrchestrator } from "../../src/orchestrator/orchestrator.js";
import { TestAgent } from "./test-agent.js";

const run = promisify(execFile);
const GRPCURL_VERSION = "v1.9.3";
const SCHEDULER = "thaw.scheduler.v1.SchedulerService";
const ADMIN = "admin-secret";
/** ExplainPlacement and ListAgents are the operators': the admin token goes along. */
const AS_ADMIN = ["-H", `authorization: Bearer ${ADMIN}`];

let orchestrator: RunningOrchestrator;
let agent: TestAgent;
let address: string;

test.before(async () => {
  orchestrator = await startOrchestrator({ port: 0, modelsFile: null, heartbeatIntervalMs: 100, agentExpiryMs: 5000, adminToken: ADMIN, models: [{ id: "m" }], log: () => {} });
  agent = await TestAgent.start({ id: "a", models: { m: Tier.GPU }, scheduler: orchestrator.url, heartbeatMs: 50 });
  address = `127.0.0.1:${orchestrator.port}`;
});

test.after.always(async () => {
  await agent?.close();
  await orchestrator?.close();
});

/** grpcurl on PATH or in $GOPATH/bin, or why there is none (looked up locally, never installed). */
function findGrpcurl(): { path?: string; why?: string } {
  const candidates = ["grpcurl"];
  const gopath = spawnSync("go", ["env", "GOPATH"], { encoding: "utf8" });
  if (gopath.status === 0) candidates.push(path.join(gopath.stdout.trim(), "bin", "grpcurl"));
  for (const c of candidates) if (spawnSync(c, ["-version"]).status === 0) return { path: c };
  return { why: `grpcurl is not on PATH${gopath.status === 0 ? " nor in $GOPATH/bin" : ""}; install it with go install github.com/fullstorydev/grpcurl/cmd/grpcurl@${GRPCURL_VERSION}` };
}

const grpcurl = findGrpcurl();

test("buf curl lists services and calls SchedulerService RPCs through reflection (v1 and v1alpha)", async (t) => {
  const buf = ["buf", "curl", "--http2-prior-knowledge", "--protocol", "grpc", ...AS_ADMIN];
  const listed = await run("npx", [...buf, "--list-services", orchestrator.url]);
  t.deepEqual(listed.stdout.trim().split("\n").sort(), ["grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection", SCHEDULER]);
  const methods = await run("npx", [...buf, "--list-methods", orchestrator.url]);
  t.true(methods.stdout.includes(`${SCHEDULER}/ExplainPlacement`));
  for (const reflect of ["grpc-v1", "grpc-v1alpha"]) {
    const explained = await run("npx", [...buf, "--reflect-protocol", reflect, "-d", '{"model":"m"}', `${orchestrator.url}/${SCHEDULER}/ExplainPlacement`]);
    const body = JSON.parse(explained.stdout);
    t.is(body.scores[0].agentId, "a", reflect);
    t.true(body.scores[0].chosen, reflect);
  }
  const chat = await run("npx", [...buf, "-d", '{"model":"m","messages":[{"role":"user","content":"hi"}]}', `${orchestrator.url}/${SCHEDULER}/ChatCompletion`]);
  const messages = chat.stdout.trim().split(/\n(?=\{)/).map((m) => JSON.parse(m));
  t.is(messages.map((m) => m.text ?? "").join(""), "Hello, world!");
  t.is(messages.at(-1).finishReason, "COMPLETION_FINISH_REASON_STOP");
});

(grpcurl.path ? test : test.skip)("grpcurl lists, describes and calls SchedulerService through reflection", async (t) => {
  const g = grpcurl.path!;
  const list = await run(g, ["-plaintext", address, "list"]);
  t.true(list.stdout.split("\n").includes(SCHEDULER));
  const described = await run(g, ["-plaintext", address, "describe", `${SCHEDULER}.ChatCompletion`]);
  t.regex(described.stdout, /returns \( stream \.thaw\.scheduler\.v1\.ChatCompletionResponse \)/);
  const message = await run(g, ["-plaintext", address, "describe", "thaw.agent.v1.AgentStatus"]);
  t.regex(message.stdout, /repeated \.thaw\.agent\.v1\.ModelCacheEntry models/);
  const agents = JSON.parse((await run(g, ["-plaintext", ...AS_ADMIN, "-d", "{}", address, `${SCHEDULER}/ListAgents`])).stdout);
  t.is(agents.agents[0].status.agentId, "a");
  const chat = await run(g, ["-plaintext", "-d", '{"model":"m","messages":[{"role":"user","content":"hi"}]}', address, `${SCHEDULER}/ChatCompletion`]);
  t.regex(chat.stdout, /"text": "Hello"/);
});
if (!grpcurl.path) process.stderr.write(`reflection.test.ts: the grpcurl test is skipped: ${grpcurl.why}\n`);

test("reflection answers symbols, files with their dependencies once per stream, and NOT_FOUND", async (t) => {
  const client = createClient(ServerReflection, createGrpcTransport({ baseUrl: orchestrator.url }));
  async function* requests() {
    yield { messageRequest: { case: "fileContainingSymbol" as const, value: `${SCHEDULER}` } };
    yield { messageRequest: { case: "fileByFilename" as const, value: "thaw/agent/v1/agent.proto" } };
    yield { messageRequest: { case: "fileContainingSymbol" as const, value: "thaw.nope.Missing" } };
    yield { messageRequest: { case: "listServices" as const, value: "" } };
  }
  const answers = [];
  for await (const r of client.serverReflectionInfo(requests())) answers.push(r);
  const first = answers[0].messageResponse;
  t.is(first.case, "fileDescriptorResponse");
  const names = (first.value as { fileDescriptorProto: Uint8Array[] }).fileDescriptorProto.map((b) => fromBinary(FileDescriptorProtoSchema, b).name);
  t.is(names[0], "thaw/scheduler/v1/scheduler_service.proto");
  t.true(names.includes("thaw/agent/v1/agent.proto"));
  t.true(names.includes("thaw/checkpoint/v1/checkpoint.proto"));
  const second = answers[1].messageResponse.value as { fileDescriptorProto: Uint8Array[] };
  t.deepEqual(
    second.fileDescriptorProto.map((b) => fromBinary(FileDescriptorProtoSchema, b).name),
    ["thaw/agent/v1/agent.proto"],
    "the file asked for, without dependencies already sent on this stream",
  );
  t.is(answers[2].messageResponse.case, "errorResponse");
  t.is(answers[3].messageResponse.case, "listServicesResponse");
});
