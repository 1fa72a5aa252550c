// thaw agents: the agents an orchestrator knows, from their heartbeats.
import { parseArgs } from "node:util";
import { toJson } from "@bufbuild/protobuf";
import { clientAdminToken } from "./credentials.js";
import { ThawClient, tierName } from "../client/thaw-client.js";
import { AgentInfoSchema } from "../gen/thaw/scheduler/v1/scheduler_pb.js";
import { formatBytes, table } from "./models-command.js";

const USAGE = `usage: thaw agents [--orchestrator URL] [--json]

Lists the agents an orchestrator knows: address, liveness, queue, engines, and the models each
holds with their tier (gpu, dram, disk).
  --orchestrator URL   orchestrator address (default THAW_ORCHESTRATOR, else http://127.0.0.1:8000)
  --admin-token TOKEN  the operators' secret (default THAW_ADMIN_TOKEN, else the one thaw serve or
                       thaw orchestrator keeps in $THAW_HOME/admin-token, ./.thaw by default)`;

export async function main(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    options: { orchestrator: { type: "string" }, "admin-token": { type: "string" }, json: { type: "boolean" }, help: { type: "boolean", short: "h" } },
  });
  if (values.help) return void process.stdout.write(USAGE + "\n");
  const agents = await new ThawClient({ baseUrl: values.orchestrator, token: await clientAdminToken(values) }).listAgents();
  if (values.json) return void process.stdout.write(JSON.stringify(agents.map((a) => toJson(AgentInfoSchema, a)), null, 2) + "\n");
  const now = Date.now();
  const rows = agents.map((a) => {
    const s = a.status!;
    const seen = ((now - Number(a.lastHeartbeatUnixMs)) / 1000).toFixed(1);
    return [
      s.agentId,
      s.address,
      a.expired ? `expired (${seen}s)` : `live (${seen}s)`,
      String(s.queueLength),
      s.engines.map((e) => `${e.device}`).join(",") || "-",
      s.models.map((m) => `${m.ref?.modelId}:${tierName(m.tier)}${m.bytes > 0n ? `(${formatBytes(Number(m.bytes))})` : ""}`).join(" ") || "-",
    ];
  });
  process.stdout.write(table(["AGENT", "ADDRESS", "STATE", "QUEUE", "ENGINES", "MODELS"], rows));
}
