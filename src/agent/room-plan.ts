// Where a model goes among an agent's devices, and what must leave for it: a pure function of the
// devices' budgets and resident models, so the decision can be tested and explained on its own.
// Each resident model holds its weights plus its KV floor in its device's budget; the floors of all
// models of a device must also fit the worker's shared KV pool. Room is made by evicting the least
// recently used idle models of one device, never a model with a request running.

export interface ResidentView {
  key: string;
  /** Bytes it holds in the budget (weights plus floor). */
  bytes: number;
  floorBytes: number;
  /** Requests running on it, plus one while the use a LoadModel announced has not begun. */
  running: number;
  /** When it last served (larger: more recent). */
  lastUsed: number;
  /** Already being unloaded: its bytes come back soon, it cannot be evicted again. */
  leaving: boolean;
}

export interface DeviceView {
  slot: number;
  device: string;
  /** Bytes resident models may hold; undefined until the worker has reported it. */
  budgetBytes: number | undefined;
  /** The worker is up: a model can be placed on it now. */
  up: boolean;
  residents: readonly ResidentView[];
  /** Bytes and floors held by loads in progress. */
  reservedBytes: number;
  reservedFloorBytes: number;
  /** The worker's shared KV pool, which must hold every floor (undefined: not known, not checked). */
  kvPoolBytes: number | undefined;
}

export interface RoomNeed {
  key: string;
  weightBytes: number;
  floorBytes: number;
}

export type RoomPlan =
  /** Room without evicting anything, on the device with the most free bytes. */
  | { kind: "fits"; slot: number }
  /** Room once these idle models leave (the fewest bytes evicted of any device). */
  | { kind: "evict"; slot: number; victims: string[]; bytes: number }
  /** Busy models (or loads in progress, or workers starting) leave no room now; it may come. */
  | { kind: "wait"; reason: string }
  /** No device could ever hold the model. */
  | { kind: "never"; reason: string };

export function usedBytes(d: DeviceView): number {
  return d.residents.reduce((s, r) => s + r.bytes, d.reservedBytes);
}

function usedFloors(d: DeviceView): number {
  return d.residents.reduce((s, r) => s + r.floorBytes, d.reservedFloorBytes);
}

/** The largest model (weights) a device could hold at all: its budget less one floor. */
export function maxModelBytes(budgetBytes: number, floorBytes: number): number {
  return Math.max(0, budgetBytes - floorBytes);
}

function roomNow(d: DeviceView, need: RoomNeed, freedBytes = 0, freedFloors = 0): boolean {
  if (d.budgetBytes === undefined) return false;
  const bytesOk = d.budgetBytes - usedBytes(d) + freedBytes >= need.weightBytes + need.floorBytes;
  const floorsOk = d.kvPoolBytes === undefined || d.kvPoolBytes - usedFloors(d) + freedFloors >= need.floorBytes;
  return bytesOk && floorsOk;
}

function roomEver(d: DeviceView, need: RoomNeed): boolean {
  if (d.budgetBytes === undefined) return true; // not known yet
  return d.budgetBytes >= need.weightBytes + need.floorBytes && (d.kvPoolBytes === undefined || d.kvPoolBytes >= need.floorBytes);
}

/** The least recently used idle models of `d` whose leaving makes room, or undefined when they cannot. */
function victimsOn(d: DeviceView, need: RoomNeed): { victims: ResidentView[]; bytes: number } | undefined {
  const idle = d.residents.filter((r) => r.running === 0 && !r.leaving).sort((a, b) => a.lastUsed - b.lastUsed);
  const victims: ResidentView[] = [];
  let bytes = 0;
  let floors = 0;
  for (const r of idle) {
    if (roomNow(d, need, bytes, floors)) break;
    victims.push(r);
    bytes += r.bytes;
    floors += r.floorBytes;
  }
  return roomNow(d, need, bytes, floors) ? { victims, bytes } : undefined;
}

export function planRoom(devices: readonly DeviceView[], need: RoomNeed): RoomPlan {
  const total = need.weightBytes + need.floorBytes;
  if (devices.length > 0 && !devices.some((d) => roomEver(d, need))) {
    const largest = devices.reduce((a, b) => ((b.budgetBytes ?? 0) > (a.budgetBytes ?? 0) ? b : a));
    const budget = largest.budgetBytes ?? 0;
    if (budget >= total) {
      return {
        kind: "never",
        reason: `${need.key}'s KV floor of ${need.floorBytes} bytes does not fit the ${largest.kvPoolBytes ?? 0}-byte KV pool of any device (--kv-floor-bytes, --kv-pool-bytes)`,
      };
    }
    return {
      kind: "never",
      reason:
        `${need.key} needs ${total} bytes of a device (${need.weightBytes} of weights + a ${need.floorBytes}-byte KV floor); ` +
        `the largest device budget on this agent is ${budget} bytes (${largest.device}), which holds models of up to ${maxModelBytes(budget, need.floorBytes)} bytes`,
    };
  }
  const up = devices.filter((d) => d.up && d.budgetBytes !== undefined);
  const fitting = up.filter((d) => roomNow(d, need));
  if (fitting.length > 0) {
    const best = fitting.reduce((a, b) => (b.budgetBytes! - usedBytes(b) > a.budgetBytes! - usedBytes(a) ? b : a));
    return { kind: "fits", slot: best.slot };
  }
  let choice: { d: DeviceView; victims: ResidentView[]; bytes: number } | undefined;
  for (const d of up) {
    const v = victimsOn(d, need);
    if (v === undefined) continue;
    const better =
      choice === undefined || v.bytes < choice.bytes || (v.bytes === choice.bytes && v.victims[0].lastUsed < choice.victims[0].lastUsed);
    if (better) choice = { d, ...v };
  }
  if (choice !== undefined) return { kind: "evict", slot: choice.d.slot, victims: choice.victims.map((v) => v.key), bytes: choice.bytes };
  if (devices.length === 0) return { kind: "never", reason: "this agent runs no engine workers (--engines none)" };
  const starting = devices.some((d) => !d.up);
  return {
    kind: "wait",
    reason: starting && up.length === 0 ? "no engine worker is up yet" : "every device is full of models with requests running or loading",
  };
}
