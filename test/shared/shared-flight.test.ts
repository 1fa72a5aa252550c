import test from "ava";
import { SharedFlights } from "../../src/shared/shared-flight.js";

/** Work the test reports on and finishes by hand. */
function controllable() {
  let starts = 0;
  let finish!: (value: string) => void;
  let report!: (progress: number) => void;
  let signal: AbortSignal | undefined;
  const start = (onReport: (p: number) => void, workSignal: AbortSignal) => {
    starts++;
    signal = workSignal;
    report = onReport;
    return new Promise<string>((resolve, reject) => {
      finish = resolve;
      workSignal.addEventListener("abort", () => reject(new Error("aborted")));
    });
  };
  return {
    start,
    get starts() { return starts; },
    get signal() { return signal; },
    finish: (v: string) => finish(v),
    report: (p: number) => report(p),
  };
}

const tick = () => new Promise((r) => setImmediate(r));

test("concurrent callers share one piece of work and its progress", async (t) => {
  const flights = new SharedFlights<number, string>("abort");
  const work = controllable();
  const seenA: number[] = [];
  const seenB: number[] = [];
  const first = flights.run("m@main", work.start, (p) => seenA.push(p));
  await tick();
  work.report(1);
  const second = flights.run("m@main", work.start, (p) => seenB.push(p));
  work.report(2);
  work.finish("index");
  t.deepEqual(await Promise.all([first, second]), ["index", "index"]);
  t.is(work.starts, 1);
  t.deepEqual(seenA, [1, 2]);
  t.deepEqual(seenB, [1, 2]); // a late joiner starts from the latest report
  t.is(flights.size, 0);
});

test("abort mode: the work is aborted only when the last caller leaves", async (t) => {
  const flights = new SharedFlights<number, string>("abort");
  const work = controllable();
  const leaveFirst = new AbortController();
  const leaveSecond = new AbortController();
  const first = flights.run("k", work.start, undefined, leaveFirst.signal);
  const second = flights.run("k", work.start, undefined, leaveSecond.signal);
  await tick();
  leaveFirst.abort();
  await t.throwsAsync(first, { any: true });
  t.false(work.signal!.aborted);
  leaveSecond.abort();
  await t.throwsAsync(second, { any: true });
  t.true(work.signal!.aborted);
  // A newcomer while the aborted work winds down starts afresh.
  const third = flights.run("k", work.start);
  await tick();
  t.is(work.starts, 2);
  work.finish("again");
  t.is(await third, "again");
});

test("finish mode: work runs to its end after every caller has left", async (t) => {
  const flights = new SharedFlights<number, string>();
  const work = controllable();
  const leave = new AbortController();
  const caller = flights.run("k", work.start, undefined, leave.signal);
  await tick();
  leave.abort();
  await t.throwsAsync(caller, { any: true });
  t.false(work.signal!.aborted);
  t.true(flights.has("k"));
  work.finish("warm");
  await tick();
  t.false(flights.has("k"));
});

test("a failure reaches every caller and the next call starts afresh", async (t) => {
  const flights = new SharedFlights<number, string>("abort");
  let calls = 0;
  const failing = async () => {
    calls++;
    throw new Error("bad safetensors header");
  };
  await t.throwsAsync(Promise.all([flights.run("k", failing), flights.run("k", failing)]), { message: "bad safetensors header" });
  t.is(calls, 1);
  await t.throwsAsync(flights.run("k", failing), { message: "bad safetensors header" });
  t.is(calls, 2);
});
