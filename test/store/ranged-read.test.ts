// readObjectRange and streamWithResume over an in-memory backend that can fail on cue: order,
// bounded concurrency, resumption from the last byte, and giving up on errors that are not transient.
import test from "ava";
import { randomBytes } from "node:crypto";
import type { ObjectBackend, ObjectBody } from "../../src/store/object-backend.js";
import { readObjectRange, streamWithResume } from "../../src/store/ranged-read.js";
import { resolveTransferOptions } from "../../src/store/transfer-options.js";

/** Serves one object in 1000-byte pieces; `failAt` makes GETs break once past those absolute offsets. */
class MemoryBackend implements Partial<ObjectBackend> {
  readonly location = "mem://test";
  gets: [number, number | undefined][] = [];
  active = 0;
  maxActive = 0;
  constructor(
    readonly data: Buffer,
    readonly failAt: Set<number> = new Set(),
    readonly error: () => Error = () => Object.assign(new Error("socket hang up"), { code: "ECONNRESET" }),
  ) {}

  async get(_key: string, start: number, end: number | undefined): Promise<ObjectBody> {
    this.gets.push([start, end]);
    const stop = end ?? this.data.length;
    const self = this;
    async function* chunks() {
      self.active++;
      self.maxActive = Math.max(self.maxActive, self.active);
      try {
        for (let at = start; at < stop; at += 1000) {
          await new Promise((r) => setTimeout(r, 1));
          for (const f of self.failAt) {
            if (f >= at && f < Math.min(stop, at + 1000)) {
              self.failAt.delete(f);
              yield self.data.subarray(at, f); // part of the piece, then the connection drops
              throw self.error();
            }
          }
          yield self.data.subarray(at, Math.min(stop, at + 1000));
        }
      } finally {
        self.active--;
      }
    }
    return { objectSize: this.data.length, metadata: {}, chunks: chunks() };
  }
}

const options = resolveTransferOptions({ rangeSize: 4000, readConcurrency: 3, baseDelayMs: 1, maxDelayMs: 2, attempts: 3 });

async function collect(it: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const parts: Uint8Array[] = [];
  for await (const p of it) parts.push(p);
  return Buffer.concat(parts);
}

test("a large range is fetched as concurrent pieces and yielded in order", async (t) => {
  const backend = new MemoryBackend(randomBytes(50_000));
  const got = await collect(readObjectRange(backend as unknown as ObjectBackend, "k", 123, 45_678, options));
  t.true(got.equals(backend.data.subarray(123, 45_678)));
  t.is(backend.maxActive, 3);
  t.is(backend.gets.length, Math.ceil((45_678 - 123) / 4000));
});

test("a dropped connection resumes from the last byte received, in every piece", async (t) => {
  const backend = new MemoryBackend(randomBytes(50_000), new Set([1_500, 9_999, 30_001, 30_002]));
  const got = await collect(readObjectRange(backend as unknown as ObjectBackend, "k", 0, 50_000, options));
  t.true(got.equals(backend.data));
  const resumed = backend.gets.filter(([start]) => [1_500, 9_999, 30_001, 30_002].includes(start));
  t.is(resumed.length, 4, JSON.stringify(backend.gets));
});

test("repeated drops without progress give up after the configured attempts", async (t) => {
  const backend = new MemoryBackend(randomBytes(5_000));
  // Fails at its start every time: no progress between attempts.
  backend.get = async () => {
    backend.gets.push([0, 0]);
    throw Object.assign(new Error("connect ECONNREFUSED"), { code: "ECONNREFUSED" });
  };
  await t.throwsAsync(collect(streamWithResume(backend as unknown as ObjectBackend, "k", 0, 5_000, options)), { message: /ECONNREFUSED/ });
  t.is(backend.gets.length, 3);
});

test("errors that are not transient surface at once", async (t) => {
  const backend = new MemoryBackend(randomBytes(5_000), new Set([2_000]), () => new Error("checksum mismatch"));
  await t.throwsAsync(collect(streamWithResume(backend as unknown as ObjectBackend, "k", 0, 5_000, options)), { message: "checksum mismatch" });
  t.is(backend.gets.length, 1);
});

test("a reader that stops early or aborts stops the prefetches", async (t) => {
  const backend = new MemoryBackend(randomBytes(100_000));
  for await (const piece of readObjectRange(backend as unknown as ObjectBackend, "k", 0, 100_000, options)) {
    t.true(piece.length > 0);
    break;
  }
  await new Promise((r) => setTimeout(r, 50));
  t.is(backend.active, 0);
  const controller = new AbortController();
  const reading = collect(readObjectRange(backend as unknown as ObjectBackend, "k", 0, 100_000, options, controller.signal));
  setTimeout(() => controller.abort(), 5);
  await t.throwsAsync(reading, { any: true, name: "AbortError" });
  await new Promise((r) => setTimeout(r, 50));
  t.is(backend.active, 0);
});
