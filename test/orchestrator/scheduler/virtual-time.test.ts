// The scheduler in virtual time (the hooks bench/sim uses): injected timers drive progress
// timeouts, an injected placement policy replaces thaw's ranking, and a whole simulated run is
// deterministic and agrees with the hardware figures it is built from.
import test from "ava";
import { Code, ConnectError } from "@connectrpc/connect";
import { withProgressTimeout, isNoProgress } from "../../../src/orchestrator/scheduler/progress-timeout.js";
import { VirtualClock } from "../../../bench/sim/virtual-clock.js";
import { H200, speedOf } from "../../../bench/sim/hardware.js";
import { modelBytes, simulate, type SimConfig } from "../../../bench/sim/simulation.js";
import type { Request } from "../../../bench/sim/workload.js";

test("a stream silent past the progress timeout is aborted at that virtual time, and each message restarts it", async (t) => {
  const clock = new VirtualClock();
  async function* stream(signal: AbortSignal) {
    for (const gapMs of [400, 400, 400]) {
      await new Promise<void>((resolve, reject) => {
        const h = clock.after(gapMs, resolve);
        signal.addEventListener("abort", () => (h.cancel(), reject(signal.reason)), { once: true });
      });
      yield clock.now();
    }
    await new Promise<void>((_, reject) => signal.addEventListener("abort", () => reject(signal.reason), { once: true }));
  }
  const seen: number[] = [];
  const done = (async () => {
    for await (const at of withProgressTimeout(stream, { ms: 500, what: "test", timers: clock.timers })) seen.push(at);
  })();
  const failure = t.throwsAsync(done);
  await clock.run();
  const err = await failure;
  t.deepEqual(seen, [400, 800, 1200]); // each gap under 500 ms: the timer restarted every time
  t.true(isNoProgress(err));
  t.is(ConnectError.from(err).code, Code.DeadlineExceeded);
  t.is(clock.now(), 1700); // 500 ms after the last message, in virtual time
});

function oneModel(policy: SimConfig["policy"], requests: Request[]): SimConfig {
  return {
    policy,
    agents: 3,
    models: 1,
    hardware: H200,
    workload: () => requests[Symbol.iterator](),
    warmupMs: 0,
    endMs: 3_600_000,
    keepAliveSeconds: 300,
    maxInflightPerAgent: 8,
    maxQueue: 100,
    diskCopies: 0,
    seed: 3,
  };
}

test("a simulated run goes through the real scheduler: a store cold start, then resident, then a DRAM start after keep-alive", async (t) => {
  const req = (atMs: number): Request => ({ atMs, model: 0, promptTokens: 1000, outputTokens: 10 });
  // First request: cold from the store; second: resident; third, after the 300 s keep-alive unloaded it: from DRAM.
  const r = await simulate(oneModel("thaw", [req(1000), req(60_000), req(1_000_000)]));
  t.is(r.completed, 3);
  t.deepEqual(r.failed, {});
  t.deepEqual(r.coldStarts, { dram: 1, disk: 0, remote: 1 });
  const [resident, fromDram, fromStore] = r.ttftMs;
  // Resident: prefill of 1000 tokens plus one decode step of the model.
  const bytes = modelBytes(1, 3)[0];
  const speed = speedOf(bytes);
  const warm = (speed.prefillSeconds(1000) + speed.stepSeconds(1)) * 1000;
  t.true(Math.abs(resident - warm) < 1, `${resident} vs ${warm}`);
  // From DRAM: the copy at 50 GB/s and LoadWeights, then the same.
  const dram = (H200.loadOverheadSeconds + bytes / H200.dramToGpu) * 1000 + warm;
  t.true(Math.abs(fromDram - dram) < 2, `${fromDram} vs ${dram}`);
  t.true(fromStore > dram && fromStore < 60_000);
  // GPU time: held from the first load until the keep-alive sweep after the second request, then again.
  t.true(r.gpuSeconds > 300 && r.gpuSeconds < 1200, String(r.gpuSeconds));
});

test("the same workload gives the same result twice; every policy serves it", async (t) => {
  const requests: Request[] = Array.from({ length: 40 }, (_, i) => ({ atMs: 1000 + i * 5000, model: 0, promptTokens: 100, outputTokens: 50 }));
  const a = await simulate(oneModel("thaw", requests));
  const b = await simulate(oneModel("thaw", requests));
  t.deepEqual([...a.ttftMs], [...b.ttftMs]);
  t.is(a.gpuSeconds, b.gpuSeconds);
  t.is(a.completed, 40);
  for (const policy of ["serverlessllm", "least-loaded", "round-robin"] as const) {
    const r = await simulate(oneModel(policy, requests));
    t.is(r.completed, 40, policy);
  }
});
