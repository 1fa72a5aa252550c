import test from "ava";
import { SharedConversions } from "../../src/converter/shared-conversion.js";

/** A conversion the test finishes by hand. */
function controllable() {
  let starts = 0;
  let finish!: (value: string) => void;
  let report!: (progress: number) => void;
  let aborted: AbortSignal | undefined;
  const start = (signal: AbortSignal, onProgress: (p: number) => void) => {
    starts++;
    aborted = signal;
    report = onProgress;
    return new Promise<string>((resolve, reject) => {
      finish = resolve;
      signal.addEventListener("abort", () => reject(new Error("aborted")));
    });
  };
  return { start, get starts() { return starts; }, finish: (v: string) => finish(v), report: (p: number) => report(p), get signal() { return aborted; } };
}

async function drain<P, R>(gen: AsyncGenerator<P, R>): Promise<{ progress: P[]; result: R }> {
  const progress: P[] = [];
  for (;;) {
    const step = await gen.next();
    if (step.done) return { progress, result: step.value };
    progress.push(step.value);
  }
}

test("concurrent callers share one conversion and its progress", async (t) => {
  const shared = new SharedConversions<number, string>();
  const conversion = controllable();
  const first = drain(shared.join("m@main", conversion.start));
  await new Promise((r) => setImmediate(r));
  conversion.report(1);
  const second = drain(shared.join("m@main", conversion.start));
  await new Promise((r) => setImmediate(r));
  conversion.report(2);
  await new Promise((r) => setImmediate(r));
  conversion.finish("index");
  const [a, b] = await Promise.all([first, second]);
  t.is(conversion.starts, 1);
  t.deepEqual(a, { progress: [1, 2], result: "index" });
  t.deepEqual(b, { progress: [1, 2], result: "index" }); // the late joiner starts from the latest state
  t.is(shared.size, 0);
});

test("the conversion is aborted only when the last caller leaves", async (t) => {
  const shared = new SharedConversions<number, string>();
  const conversion = controllable();
  const leaveFirst = new AbortController();
  const leaveSecond = new AbortController();
  const first = drain(shared.join("k", conversion.start, leaveFirst.signal));
  const second = drain(shared.join("k", conversion.start, leaveSecond.signal));
  await new Promise((r) => setImmediate(r));
  leaveFirst.abort();
  conversion.report(1); // wakes the first caller, which notices it left
  await t.throwsAsync(first, { any: true });
  t.false(conversion.signal!.aborted);
  leaveSecond.abort();
  conversion.report(2);
  await t.throwsAsync(second, { any: true });
  t.true(conversion.signal!.aborted);
});

test("a failure reaches every caller and the next call starts afresh", async (t) => {
  const shared = new SharedConversions<number, string>();
  let calls = 0;
  const failing = async () => {
    calls++;
    throw new Error("bad safetensors header");
  };
  await t.throwsAsync(drain(shared.join("k", failing)), { message: "bad safetensors header" });
  await t.throwsAsync(drain(shared.join("k", failing)), { message: "bad safetensors header" });
  t.is(calls, 2);
});
