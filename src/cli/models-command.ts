// thaw models add|list|rm: model registrations on a running orchestrator.
import { parseArgs } from "node:util";
import { toJson } from "@bufbuild/protobuf";
import { clientAdminToken } from "./credentials.js";
import { ThawClient, tierName } from "../client/thaw-client.js";
import { ModelInfoSchema, type ModelInfo } from "../gen/thaw/scheduler/v1/scheduler_pb.js";
import { numberFlag } from "./orchestrator-command.js";

const USAGE = `usage: thaw models add ID [--source SRC] [--revision REV] [--keep-alive SECONDS] [--max-model-len N] [--owned-by NAME]
       thaw models list [--json]
       thaw models rm ID

Registers, lists and removes the models an orchestrator serves. SRC is a Hugging Face repo id or
a folder the converter may read (default: ID); a model is converted on its first request.
  --orchestrator URL   orchestrator address (default THAW_ORCHESTRATOR, else http://127.0.0.1:8000)
  --admin-token TOKEN  the operators' secret (default THAW_ADMIN_TOKEN, else the one thaw serve or
                       thaw orchestrator keeps in $THAW_HOME/admin-token, ./.thaw by default)`;

export async function main(args: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      orchestrator: { type: "string" },
      "admin-token": { type: "string" },
      source: { type: "string" },
      revision: { type: "string" },
      "keep-alive": { type: "string" },
      "max-model-len": { type: "string" },
      "owned-by": { type: "string" },
      json: { type: "boolean" },
      help: { type: "boolean", short: "h" },
    },
  });
  const [action, id, ...extra] = positionals;
  if (values.help || action === undefined) return void process.stdout.write(USAGE + "\n");
  const client = new ThawClient({ baseUrl: values.orchestrator, token: await clientAdminToken(values) });
  if (extra.length > 0) throw new TypeError(`unexpected arguments: ${extra.join(" ")}`);
  switch (action) {
    case "add": {
      if (!id) throw new TypeError("thaw models add needs a model ID");
      const info = await client.registerModel({
        id,
        source: values.source,
        revision: values.revision,
        keepAliveSeconds: numberFlag(values["keep-alive"], "keep-alive", { integer: true }),
        maxModelLen: numberFlag(values["max-model-len"], "max-model-len", { integer: true }),
        ownedBy: values["owned-by"],
      });
      process.stdout.write(values.json ? JSON.stringify(toJson(ModelInfoSchema, info)) + "\n" : `registered ${describe(info)}\n`);
      return;
    }
    case "list":
    case "ls": {
      const models = await client.listModels();
      if (values.json) return void process.stdout.write(JSON.stringify(models.map((m) => toJson(ModelInfoSchema, m)), null, 2) + "\n");
      const rows = models.map((m) => [
        m.spec!.id,
        `${m.spec!.source}@${m.spec!.revision}`,
        m.bytes > 0n ? formatBytes(Number(m.bytes)) : "-",
        `${m.spec!.keepAliveSeconds}s`,
        m.placements.map((p) => `${p.agentId}:${tierName(p.tier)}`).join(" ") || "-",
      ]);
      process.stdout.write(table(["MODEL", "SOURCE", "SIZE", "KEEP-ALIVE", "PLACEMENTS"], rows));
      return;
    }
    case "rm":
    case "remove": {
      if (!id) throw new TypeError("thaw models rm needs a model ID");
      await client.unregisterModel(id);
      process.stdout.write(`removed ${id}\n`);
      return;
    }
    default:
      throw new TypeError(`unknown action '${action}': use add, list or rm`);
  }
}

function describe(m: ModelInfo): string {
  return `${m.spec!.id} (source ${m.spec!.source}@${m.spec!.revision}, keep-alive ${m.spec!.keepAliveSeconds}s)`;
}

export function formatBytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${n.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
}

/** Left-aligned columns separated by two spaces. */
export function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]))).join("  ") + "\n";
  return line(header) + rows.map(line).join("");
}
