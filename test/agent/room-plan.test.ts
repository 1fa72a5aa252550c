// The GPU tier's room decision as a pure function: where a model goes, which idle models leave for
// it (least recently used first, never a busy one), when it must wait and when it can never fit.
import test from "ava";
import { type DeviceView, type ResidentView, maxModelBytes, planRoom, usedBytes } from "../../src/agent/room-plan.js";

const resident = (key: string, bytes: number, lastUsed: number, running = 0, floorBytes = 10): ResidentView => ({
  key,
  bytes,
  floorBytes,
  running,
  lastUsed,
  leaving: false,
});

function device(slot: number, budgetBytes: number | undefined, residents: ResidentView[] = [], extra: Partial<DeviceView> = {}): DeviceView {
  return { slot, device: `cuda:${slot}`, budgetBytes, up: true, residents, reservedBytes: 0, reservedFloorBytes: 0, kvPoolBytes: undefined, ...extra };
}

const need = (weightBytes: number, floorBytes = 10) => ({ key: "m@main", weightBytes, floorBytes });

test("a model that fits goes to the device with the most free bytes, evicting nothing", (t) => {
  const devices = [device(0, 1000, [resident("a", 600, 1)]), device(1, 1000, [resident("b", 300, 2)])];
  t.deepEqual(planRoom(devices, need(200)), { kind: "fits", slot: 1 });
  t.is(usedBytes(devices[1]), 300);
});

test("room is made by evicting the least recently used idle models, never a busy one", (t) => {
  const devices = [
    device(0, 1000, [resident("old-busy", 300, 1, 2), resident("older-idle", 300, 2), resident("newer-idle", 300, 3)]),
  ];
  // 100 free; 400 needed (390 + a 10-byte floor): the oldest idle model (not the busy one, older still) is enough.
  t.deepEqual(planRoom(devices, need(390)), { kind: "evict", slot: 0, victims: ["older-idle"], bytes: 300 });
  // 700 needed: both idle models leave, oldest first.
  t.deepEqual(planRoom(devices, need(690)), { kind: "evict", slot: 0, victims: ["older-idle", "newer-idle"], bytes: 600 });
  // More than the busy model leaves room for: wait.
  t.is(planRoom(devices, need(750)).kind, "wait");
});

test("among devices, the one that evicts the fewest bytes is chosen", (t) => {
  const devices = [
    device(0, 1000, [resident("a", 900, 1)]), // would evict 900
    device(1, 1000, [resident("b", 500, 5), resident("c", 400, 6)]), // would evict 500
  ];
  t.deepEqual(planRoom(devices, need(490)), { kind: "evict", slot: 1, victims: ["b"], bytes: 500 });
});

test("models already leaving and loads in progress hold their bytes and are not evicted again", (t) => {
  const leaving = { ...resident("going", 500, 1), leaving: true };
  const d = device(0, 1000, [leaving], { reservedBytes: 400, reservedFloorBytes: 10 });
  t.is(usedBytes(d), 900);
  t.is(planRoom([d], need(200)).kind, "wait");
});

test("a model larger than every device's budget can never fit: both sizes are named", (t) => {
  const plan = planRoom([device(0, 1000), device(1, 800)], need(995, 10));
  t.is(plan.kind, "never");
  if (plan.kind === "never") {
    t.regex(plan.reason, /needs 1005 bytes of a device \(995 of weights \+ a 10-byte KV floor\)/);
    t.regex(plan.reason, /largest device budget on this agent is 1000 bytes \(cuda:0\), which holds models of up to 990 bytes/);
  }
  t.is(maxModelBytes(1000, 10), 990);
  // Exactly the budget fits (after evicting whatever is idle).
  t.deepEqual(planRoom([device(0, 1000, [resident("a", 500, 1)])], need(990, 10)), { kind: "evict", slot: 0, victims: ["a"], bytes: 500 });
});

test("the floors of a device's models must fit its KV pool", (t) => {
  const pooled = (residents: ResidentView[]) => device(0, 10_000, residents, { kvPoolBytes: 100 });
  const full = pooled([resident("a", 1000, 1, 0, 40), resident("b", 1000, 2, 0, 40)]);
  // Bytes are plentiful, but 40 + 40 + 40 floors exceed the 100-byte pool: the oldest idle model leaves.
  t.deepEqual(planRoom([full], need(100, 40)), { kind: "evict", slot: 0, victims: ["a"], bytes: 1000 });
  const never = planRoom([pooled([])], need(100, 200));
  t.is(never.kind, "never");
  if (never.kind === "never") t.regex(never.reason, /KV floor of 200 bytes does not fit the 100-byte KV pool/);
});

test("a device whose budget is not known yet, or whose worker is starting, means wait rather than never", (t) => {
  t.is(planRoom([device(0, undefined)], need(5000)).kind, "wait");
  const starting = planRoom([device(0, 1000, [], { up: false })], need(100));
  t.deepEqual(starting, { kind: "wait", reason: "no engine worker is up yet" });
  t.deepEqual(planRoom([], need(1)), { kind: "never", reason: "this agent runs no engine workers (--engines none)" });
});
