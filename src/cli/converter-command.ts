// thaw converter: runs the ConverterService until SIGINT/SIGTERM.
import { parseArgs } from "node:util";
import { ADMIN_TOKEN, DEFAULT_HOST, DEFAULT_STORE, PORTS } from "../shared/defaults.js";
import { startServer } from "../shared/server.js";
import { authorize, refuseOpenBind } from "../shared/auth.js";
import { openStore } from "../store/open-store.js";
import converterRoutes, { CONVERTER_ACCESS } from "../converter/routes.js";
import { TOKEN_OPTIONS, TOKEN_USAGE, internalToken } from "./credentials.js";
import { CONNECTION_OPTIONS, CONNECTION_USAGE, connectionFlags } from "./orchestrator-command.js";
import { exitAfter, stopLine, untilStopped } from "./until-signal.js";

const USAGE = `usage: thaw converter [--host H] [--port P] [--store DIR-or-URL] [--allow-local DIR]...

Serves thaw.converter.v1.ConverterService (gRPC, Connect, gRPC-Web on one port).
  --host         interface to bind (default ${DEFAULT_HOST}; THAW_HOST)
  --port         port (default ${PORTS.converter})
  --store        checkpoint store: folder, s3://bucket/prefix or az://container/prefix (default ${DEFAULT_STORE}; THAW_STORE)
  --allow-local  folder that Convert requests may read local models from (repeatable; default: none)
${TOKEN_USAGE}
${CONNECTION_USAGE}
Every call needs the internal or the admin token (when no internal token is set, the converter
listens on loopback only and internal calls need none).
Environment: HF_ENDPOINT, HF_TOKEN for the Hub; THAW_INTERNAL_TOKEN, THAW_ADMIN_TOKEN.`;

export async function main(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    options: {
      host: { type: "string", default: DEFAULT_HOST },
      port: { type: "string", default: String(PORTS.converter) },
      store: { type: "string", default: DEFAULT_STORE },
      "allow-local": { type: "string", multiple: true, default: [] },
      ...CONNECTION_OPTIONS,
      ...TOKEN_OPTIONS,
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) return void process.stdout.write(USAGE + "\n");
  const token = internalToken(values);
  refuseOpenBind(values.host, token, "thaw converter");
  const store = await openStore(values.store);
  const server = await startServer({
    routes: converterRoutes({ store, localRoots: values["allow-local"] }),
    host: values.host,
    port: Number(values.port),
    interceptors: [authorize({ internalToken: token, adminToken: values["admin-token"] || ADMIN_TOKEN }, CONVERTER_ACCESS)],
    limits: connectionFlags(values),
  });
  process.stderr.write(`thaw converter: serving on ${server.url} (store ${store.location})\n`);
  const reason = await untilStopped();
  process.stderr.write(stopLine("thaw converter", reason, "shutting down"));
  exitAfter(reason, 10_000);
  await server.close();
}
