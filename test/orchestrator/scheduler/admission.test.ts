// Admission: per-agent slots, one bounded FIFO, RESOURCE_EXHAUSTED with retry-after when full.
import test from "ava";
import { Code, ConnectError } from "@connectrpc/connect";
import { Admission } from "../../../src/orchestrator/scheduler/admission.js";

test("slots per agent, released slots wake the queue in order", async (t) => {
  const a = new Admission({ maxInflightPerAgent: 2, maxQueue: 2 });
  t.true(a.tryAcquire("x", 2));
  t.false(a.tryAcquire("x", 1));
  t.true(a.tryAcquire("y", 1));
  const order: number[] = [];
  const w1 = a.wait(new AbortController().signal).then(() => order.push(1));
  const w2 = a.wait(new AbortController().signal).then(() => order.push(2));
  t.is(a.queued, 2);
  const err = await t.throwsAsync(a.wait(new AbortController().signal));
  t.is((err as ConnectError).code, Code.ResourceExhausted);
  t.regex((err as ConnectError).metadata.get("retry-after") ?? "", /^\d+$/);
  a.release("x", 1, 100);
  await w1;
  a.release("x", 1, 100);
  await w2;
  t.deepEqual(order, [1, 2]);
  t.is(a.inflight("x"), 0);
});

test("a request bigger than the per-agent bound still fits an idle agent; aborted waiters leave", async (t) => {
  const a = new Admission({ maxInflightPerAgent: 2, maxQueue: 1 });
  t.true(a.tryAcquire("x", 5));
  const ctl = new AbortController();
  const w = a.wait(ctl.signal);
  ctl.abort(new Error("gone"));
  await t.throwsAsync(w, { message: "gone" });
  t.is(a.queued, 0);
  t.true(a.retryAfterSeconds() >= 1);
});
