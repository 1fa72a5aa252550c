// The orchestrator for bench/edge in its own process (what `thaw orchestrator` runs), with model
// "m" registered and admission bounds high enough not to be what is measured. Prints "port N".
import { startOrchestrator } from "../../src/orchestrator/orchestrator.js";

const orchestrator = await startOrchestrator({
  port: 0,
  modelsFile: null,
  models: [{ id: "m" }],
  maxInflightPerAgent: 1_000_000,
  maxQueue: 1_000_000,
  log: () => {},
});
process.stdout.write(`port ${orchestrator.port}\n`);
process.on("SIGTERM", () => void orchestrator.close().then(() => process.exit(0)));
