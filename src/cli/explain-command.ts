// thaw explain MODEL: every agent's placement score for a model, term by term.
import { parseArgs } from "node:util";
import { toJson } from "@bufbuild/protobuf";
import { clientAdminToken } from "./credentials.js";
import { ThawClient, type PlacementScore } from "../client/thaw-client.js";
import { ExplainPlacementResponseSchema } from "../gen/thaw/scheduler/v1/scheduler_service_pb.js";
import { formatBytes } from "../orchestrator/scheduler/placement.js";
import { table } from "./models-command.js";

const USAGE = `usage: thaw explain MODEL [--orchestrator URL] [--json]

Shows how the scheduler would place a request for MODEL: for every agent,
  score = α·cache_level − β·kv_hit_rate + γ·queue_len + δ·size/bandwidth(tier)
          + ε·eviction_bytes/dram_bandwidth
term by term, lowest first; the chosen agent is marked with *. DEVICE is where the model is or
would go: "resident", "fits" (room without eviction) or "evicts N" (idle models that would leave).
  --orchestrator URL   orchestrator address (default THAW_ORCHESTRATOR, else http://127.0.0.1:8000)
  --admin-token TOKEN  the operators' secret (default THAW_ADMIN_TOKEN, else the one thaw serve or
                       thaw orchestrator keeps in $THAW_HOME/admin-token, ./.thaw by default)`;

export async function main(args: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: { orchestrator: { type: "string" }, "admin-token": { type: "string" }, json: { type: "boolean" }, help: { type: "boolean", short: "h" } },
  });
  if (values.help || positionals.length !== 1) return void process.stdout.write(USAGE + "\n");
  const r = await new ThawClient({ baseUrl: values.orchestrator, token: await clientAdminToken(values) }).explainPlacement(positionals[0]);
  if (values.json) return void process.stdout.write(JSON.stringify(toJson(ExplainPlacementResponseSchema, r), null, 2) + "\n");
  const f = (x: number) => (Math.abs(x) < 1e-9 ? "0" : x.toFixed(3));
  const rows = r.scores.map((s) => [
    `${s.chosen ? "*" : " "} ${s.agentId}`,
    f(s.total),
    `${f(s.cacheTerm)} (level ${s.cacheLevel})`,
    `${f(s.kvTerm)} (hit ${s.kvHitRate.toFixed(2)})`,
    `${f(s.queueTerm)} (queue ${s.queueLength})`,
    `${f(s.transferTerm)} (${s.transferSeconds.toFixed(3)}s)`,
    `${f(s.evictionTerm)}${s.evictionBytes > 0n ? ` (${formatBytes(Number(s.evictionBytes))})` : ""}`,
    `${f(s.wakeTerm)}${s.wakesDevice ? " (idle GPU)" : ""}`,
    device(s),
    s.ineligibleReason || "",
  ]);
  const size = r.modelBytes > 0n ? formatBytes(Number(r.modelBytes)) : "unknown until converted";
  process.stdout.write(`model: ${positionals[0]} (${size})\nweights: α=${r.alpha} β=${r.beta} γ=${r.gamma} δ=${r.delta} ε=${r.epsilon} ζ=${r.zeta}\n`);
  process.stdout.write(table(["AGENT", "TOTAL", "α·CACHE", "−β·KV", "γ·QUEUE", "δ·TRANSFER", "ε·EVICTION", "ζ·WAKE", "DEVICE", "INELIGIBLE"], rows));
}

/** Where the model is or would go on the agent. */
function device(s: PlacementScore): string {
  const on = s.device ? `${s.device}: ` : "";
  if (s.cacheLevel === 0) return `${on}resident`;
  if (s.fitsWithoutEviction) return `${on}fits`;
  if (s.evictionBytes > 0n) return `${on}evicts ${formatBytes(Number(s.evictionBytes))}`;
  return s.device || "-";
}
