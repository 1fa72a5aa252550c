// Entry of a text worker thread (text-workers.ts). Worker threads do not inherit the TypeScript
// loader the main thread registered, so this plain module registers it before loading the worker.
import { parentPort, workerData } from "node:worker_threads";

if (workerData.module.endsWith(".ts")) {
  const { register } = await import("tsx/esm/api");
  register();
}
const { serveTextJobs } = await import(workerData.module);
serveTextJobs(parentPort);
