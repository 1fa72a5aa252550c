// Admission: per-agent slots, one bounded FIFO, RESOURCE_EXHAUSTED with retry-after when full, and
// no request that can be placed waiting behind one that cannot.
import test from "ava";
import { Code, ConnectError } from "@connectrpc/connect";
import { Admission } from "../../../src/orchestrator/scheduler/admission.js";

const never = () => new AbortController().signal;

/** An attempt that takes one slot on `agent` when it has one. */
function on(a: Admission, agent: string) {
  return () => (a.tryAcquire(agent, 1) ? agent : undefined);
}

test("slots per agent; waiters are admitted in order as slots free; a full queue is refused", async (t) => {
  const a = new Admission({ maxInflightPerAgent: 2, maxQueue: 2 });
  t.true(a.tryAcquire("x", 2));
  t.false(a.tryAcquire("x", 1));
  t.true(a.tryAcquire("y", 1));
  const order: number[] = [];
  const w1 = a.admit(on(a, "x"), never()).then(() => order.push(1));
  const w2 = a.admit(on(a, "x"), never()).then(() => order.push(2));
  t.is(a.queued, 2);
  const err = await t.throwsAsync(a.admit(on(a, "x"), never()));
  t.is((err as ConnectError).code, Code.ResourceExhausted);
  t.regex((err as ConnectError).metadata.get("retry-after") ?? "", /^\d+$/);
  a.release("x", 1, 100);
  await w1;
  t.is(a.queued, 1, "one slot freed: only the first waiter went");
  a.release("x", 1, 100);
  await w2;
  t.deepEqual(order, [1, 2]);
  t.is(a.inflight("x"), 2, "the waiters hold the slots now");
});

test("a request that can be placed now does not wait behind one that cannot", async (t) => {
  const a = new Admission({ maxInflightPerAgent: 1, maxQueue: 4 });
  t.true(a.tryAcquire("x", 1));
  const stuck = a.admit(on(a, "x"), never()); // only x will do, and x is full
  t.is(a.queued, 1);
  t.is(await a.admit(on(a, "y"), never()), "y", "y is free: admitted at once, past the waiter");
  // Both wait now; y frees first: its waiter goes although the head of the queue still cannot.
  const second = a.admit(on(a, "y"), never());
  t.is(a.queued, 2);
  a.release("y", 1);
  t.is(await second, "y");
  t.is(a.queued, 1);
  a.release("x", 1);
  t.is(await stuck, "x");
  t.is(a.queued, 0);
});

test("a newcomer tries only after every waiter had its turn (no overtaking for the same slot)", async (t) => {
  const a = new Admission({ maxInflightPerAgent: 1, maxQueue: 4 });
  let room = false; // something placement sees besides slots (room on a GPU), changing without a release
  const whenRoom = () => (room && a.tryAcquire("x", 1) ? "x" : undefined);
  const first = a.admit(whenRoom, never());
  t.is(a.queued, 1);
  room = true;
  const late = a.admit(whenRoom, never());
  t.is(await first, "x", "the waiter took the slot when the newcomer arrived");
  t.is(a.queued, 1, "the newcomer waits for the next one");
  a.release("x", 1);
  t.is(await late, "x");
});

test("an attempt that throws ends that wait with its error; aborted waiters leave; big requests fit an idle agent", async (t) => {
  const a = new Admission({ maxInflightPerAgent: 2, maxQueue: 2 });
  t.true(a.tryAcquire("x", 5), "a request bigger than the per-agent bound still fits an idle agent");
  let fail = false;
  const failing = a.admit(() => {
    if (fail) throw new ConnectError("gave up", Code.Unavailable);
    return undefined;
  }, never());
  const ctl = new AbortController();
  const aborted = a.admit(on(a, "x"), ctl.signal);
  t.is(a.queued, 2);
  ctl.abort(new Error("gone"));
  await t.throwsAsync(aborted, { message: "gone" });
  fail = true;
  a.retryWaiting();
  await t.throwsAsync(failing, { message: /gave up/ });
  t.is(a.queued, 0);
  t.true(a.retryAfterSeconds() >= 1);
});

test("a pass tries each kind of request until one of it must wait: a long queue of alike requests costs one try", async (t) => {
  const a = new Admission({ maxInflightPerAgent: 1, maxQueue: 10 });
  t.true(a.tryAcquire("x", 1));
  let tries = 0;
  const alike = () => {
    tries++;
    return a.tryAcquire("x", 1) ? "x" : undefined;
  };
  const waiting = Array.from({ length: 5 }, () => a.admit(alike, never(), "m|1"));
  const other = a.admit(on(a, "y"), never(), "n|1");
  t.is(await other, "y", "another kind is still tried (and admitted) in the same pass");
  tries = 0;
  a.release("x", 1);
  t.is(await waiting[0], "x");
  t.is(tries, 2, "the first took the slot, the second had to wait, the other three were skipped");
  t.is(a.queued, 4);
});
