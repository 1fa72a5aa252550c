// A scripted AgentService (the tests' TestAgent) in its own process, for bench/edge: answers
// Infer at once (or every --token-delay ms) so that what is measured is the edge and the scheduler.
// Prints "port N" when listening. Usage: agent-process.ts [--scheduler URL] [--token-delay MS]
import { parseArgs } from "node:util";
import { Tier } from "../../src/gen/thaw/agent/v1/agent_pb.js";
import { TestAgent } from "../../test/orchestrator/test-agent.js";

const { values } = parseArgs({ options: { scheduler: { type: "string" }, "token-delay": { type: "string", default: "0" }, id: { type: "string", default: "bench-agent" } } });
const agent = await TestAgent.start({
  id: values.id!,
  scheduler: values.scheduler,
  heartbeatMs: 1000,
  models: { m: Tier.GPU },
  reply: Array.from({ length: 16 }, (_, i) => ` t${i}`),
  tokenDelayMs: Number(values["token-delay"]),
});
process.stdout.write(`port ${agent.address.split(":")[1]}\n`);
process.on("SIGTERM", () => void agent.close().then(() => process.exit(0)));
