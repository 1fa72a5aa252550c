// The behaviour every CheckpointStore promises, as ava tests to run against each backend
// (store-contract.test.ts runs them on LocalStore, S3 on moto and Azure Blob on azurite).
import { randomBytes } from "node:crypto";
import type { TestFn } from "ava";
import { StoreAccessError } from "../../src/store/store-access-error.js";
import { NotFoundError, type CheckpointStore } from "../../src/store/store.js";
import type { CuttingProxy } from "./cutting-proxy.js";

/** A backend under test. Each call of `store` gives a store over a fresh, empty prefix or folder. */
export interface ContractTarget {
  name: string;
  /** The store is reached over a connection (object stores): its store() gives viaProxy. */
  overNetwork?: boolean;
  store(): Promise<StoreUnderTest>;
  /** A store whose bucket or container does not exist (object stores only). */
  missingContainer?(): Promise<CheckpointStore>;
  /** A store over the same data with a wrong secret (object stores only). */
  badCredentials?(): Promise<CheckpointStore>;
}

export interface StoreUnderTest {
  store: CheckpointStore;
  /** Every object or file under the store's prefix, pending uploads and temp files included. */
  rawKeys(): Promise<string[]>;
  /** The same store reached through a proxy that can drop connections (object stores only). */
  viaProxy?(): Promise<{ store: CheckpointStore; proxy: CuttingProxy }>;
}

/** Part size the targets are configured with; the big chunk spans several parts. */
export const CONTRACT_PART_SIZE = 5 << 20;
const BIG = 2 * CONTRACT_PART_SIZE + 333_333; // three parts, the last one short

/** Files of a checkpoint: a multipart chunk, a small chunk, a side file. */
function sampleFiles(): Record<string, Buffer> {
  return {
    "chunk-00000.bin": randomBytes(BIG),
    "chunk-00001.bin": randomBytes(40_961),
    "config.json": Buffer.from(JSON.stringify({ architectures: ["LlamaForCausalLM"], hidden_size: 8 })),
  };
}

/** Writes files in odd-sized pieces (some writes not awaited, as callers may do) and publishes. */
async function putCheckpoint(store: CheckpointStore, key: string, files: Record<string, Uint8Array>, index: Uint8Array): Promise<void> {
  const write = await store.beginWrite(key);
  try {
    for (const [name, data] of Object.entries(files)) {
      const out = await write.create(name);
      const pending: Promise<void>[] = [];
      for (let at = 0; at < data.length; at += 1_048_583) pending.push(out.write(data.subarray(at, at + 1_048_583)));
      await Promise.all(pending);
      await out.close();
    }
    await write.publish(index);
  } catch (error) {
    await write.abort();
    throw error;
  }
}

async function collect(it: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const parts: Uint8Array[] = [];
  for await (const p of it) parts.push(p);
  return Buffer.concat(parts);
}

export function storeContract(test: TestFn, target: ContractTarget): void {
  const title = (what: string) => `${target.name}: ${what}`;

  test(title("a checkpoint reads back byte-identical, whole and in ranges at odd offsets"), async (t) => {
    const { store } = await target.store();
    const files = sampleFiles();
    const index = randomBytes(1234);
    await putCheckpoint(store, "org--m@main", files, index);

    t.deepEqual(await store.list(), ["org--m@main"]);
    t.deepEqual(Buffer.from(await store.read("org--m@main", "model.idx")), index);
    t.deepEqual(await store.stat("org--m@main", "model.idx"), { size: index.length });
    for (const [name, data] of Object.entries(files)) {
      t.deepEqual(await store.stat("org--m@main", name), { size: data.length }, name);
      t.true(Buffer.from(await store.read("org--m@main", name)).equals(data), `read ${name}`);
      t.true((await collect(store.readRange("org--m@main", name, 0))).equals(data), `readRange ${name}`);
    }
    const big = files["chunk-00000.bin"];
    const ranges: [number, number | undefined][] = [
      [4097, 3 * 1_048_576 + 13], // across range pieces
      [CONTRACT_PART_SIZE - 7, 19], // across a part boundary
      [1, undefined], // to the end, from an odd offset
      [big.length - 5, 5], // the last bytes
      [big.length - 5, 100], // past the end: what there is
      [12345, 0], // nothing
    ];
    for (const [offset, length] of ranges) {
      const got = await collect(store.readRange("org--m@main", "chunk-00000.bin", offset, length));
      const want = big.subarray(offset, length === undefined ? undefined : offset + length);
      t.true(got.equals(want), `range ${offset}+${length}: ${got.length} bytes vs ${want.length}`);
    }
  });

  test(title("files are invisible until the index is published"), async (t) => {
    const { store } = await target.store();
    const write = await store.beginWrite("org--m@main");
    const out = await write.create("chunk-00000.bin");
    await out.write(randomBytes(1000));
    await out.close();
    t.deepEqual(await store.list(), []);
    t.is(await store.stat("org--m@main", "model.idx"), undefined);
    t.is(await store.stat("org--m@main", "chunk-00000.bin"), undefined);
    await t.throwsAsync(store.read("org--m@main", "model.idx"), { instanceOf: NotFoundError });
    await t.throwsAsync(store.read("org--m@main", "chunk-00000.bin"), { instanceOf: NotFoundError });
    await write.publish(Buffer.from("idx"));
    t.deepEqual(await store.list(), ["org--m@main"]);
    t.deepEqual(await store.stat("org--m@main", "chunk-00000.bin"), { size: 1000 });
  });

  test(title("a write aborted mid-upload leaves nothing behind"), async (t) => {
    const { store, rawKeys } = await target.store();
    const write = await store.beginWrite("org--m@main");
    const done = await write.create("chunk-00001.bin");
    await done.write(randomBytes(5000));
    await done.close();
    const out = await write.create("chunk-00000.bin");
    await out.write(randomBytes(BIG)); // parts in flight, never closed
    await write.abort();
    await write.abort(); // twice is fine
    await t.throwsAsync(out.write(randomBytes(10)));
    await t.throwsAsync(write.publish(Buffer.from("idx")));
    t.deepEqual(await store.list(), []);
    t.is(await store.stat("org--m@main", "model.idx"), undefined);
    t.deepEqual(await rawKeys(), []);
  });

  test(title("list shows only published checkpoints, sorted"), async (t) => {
    const { store } = await target.store();
    await putCheckpoint(store, "org--b@main", { "chunk-00000.bin": randomBytes(10) }, Buffer.from("b"));
    await putCheckpoint(store, "a@v1", { "chunk-00000.bin": randomBytes(10) }, Buffer.from("a"));
    const pending = await store.beginWrite("org--c@main");
    const out = await pending.create("chunk-00000.bin");
    await out.write(randomBytes(10));
    await out.close();
    const aborted = await store.beginWrite("org--d@main");
    await (await aborted.create("chunk-00000.bin")).write(randomBytes(10));
    await aborted.abort();
    t.deepEqual(await store.list(), ["a@v1", "org--b@main"]);
    await pending.abort();
  });

  test(title("an overwrite replaces the checkpoint whole and leaves no old files"), async (t) => {
    const { store, rawKeys } = await target.store();
    const first = sampleFiles();
    await putCheckpoint(store, "org--m@main", first, Buffer.from("v1"));
    const before = await rawKeys();
    const second = { "chunk-00000.bin": randomBytes(70_000), "tokenizer.json": Buffer.from("{}") };
    await putCheckpoint(store, "org--m@main", second, Buffer.from("v2"));
    t.deepEqual(Buffer.from(await store.read("org--m@main", "model.idx")).toString(), "v2");
    t.true(Buffer.from(await store.read("org--m@main", "chunk-00000.bin")).equals(second["chunk-00000.bin"]));
    t.is(await store.stat("org--m@main", "chunk-00001.bin"), undefined);
    t.is(await store.stat("org--m@main", "config.json"), undefined);
    const after = await rawKeys();
    t.is(after.length, 3, after.join(", ")); // the index and two files
    t.true(before.length >= 4);
  });

  test(title("delete removes a checkpoint and reports the bytes freed"), async (t) => {
    const { store, rawKeys } = await target.store();
    const files = sampleFiles();
    await putCheckpoint(store, "org--m@main", files, Buffer.from("index"));
    await putCheckpoint(store, "org--keep@main", { "chunk-00000.bin": randomBytes(10) }, Buffer.from("k"));
    const size = Object.values(files).reduce((sum, f) => sum + f.length, 0) + "index".length;
    t.is(await store.delete("org--m@main"), size);
    t.deepEqual(await store.list(), ["org--keep@main"]);
    t.is(await store.stat("org--m@main", "chunk-00000.bin"), undefined);
    await t.throwsAsync(store.read("org--m@main", "model.idx"), { instanceOf: NotFoundError });
    await t.throwsAsync(collect(store.readRange("org--m@main", "chunk-00000.bin", 0)), { instanceOf: NotFoundError });
    t.is(await store.delete("org--m@main"), 0);
    t.false((await rawKeys()).some((k) => k.includes("org--m@main")));
  });

  test(title("a read stopped early or aborted ends cleanly"), async (t) => {
    const { store } = await target.store();
    const files = sampleFiles();
    await putCheckpoint(store, "org--m@main", files, Buffer.from("i"));
    for await (const piece of store.readRange("org--m@main", "chunk-00000.bin", 0)) {
      t.true(piece.length > 0);
      break;
    }
    const controller = new AbortController();
    let pieces = 0;
    const reading = (async () => {
      for await (const _ of store.readRange("org--m@main", "chunk-00000.bin", 0, undefined, controller.signal)) {
        if (++pieces === 1) controller.abort();
      }
    })();
    await t.throwsAsync(reading, { any: true, name: "AbortError" });
    t.true(Buffer.from(await store.read("org--m@main", "chunk-00001.bin")).equals(files["chunk-00001.bin"]));
  });

  test(title("absent files and checkpoints are NotFoundError or undefined"), async (t) => {
    const { store } = await target.store();
    await putCheckpoint(store, "org--m@main", { "chunk-00000.bin": randomBytes(10) }, Buffer.from("i"));
    t.is(await store.stat("org--m@main", "nope.bin"), undefined);
    t.is(await store.stat("org--x@main", "model.idx"), undefined);
    await t.throwsAsync(store.read("org--m@main", "nope.bin"), { instanceOf: NotFoundError });
    await t.throwsAsync(store.read("org--x@main", "chunk-00000.bin"), { instanceOf: NotFoundError });
    await t.throwsAsync(collect(store.readRange("org--m@main", "nope.bin", 0, 1)), { instanceOf: NotFoundError });
  });

  if (target.missingContainer !== undefined) {
    const missingContainer = target.missingContainer;
    test(title("a missing bucket or container is a clear error naming the URL"), async (t) => {
      const store = await missingContainer();
      for (const attempt of [store.list(), store.stat("org--m@main", "model.idx"), store.read("org--m@main", "model.idx"), store.beginWrite("org--m@main")]) {
        const error = await t.throwsAsync(attempt, { instanceOf: StoreAccessError });
        t.true(error!.message.startsWith(store.location), error!.message);
        t.regex(error!.message, /does not exist/);
      }
    });
  }

  if (target.badCredentials !== undefined) {
    const badCredentials = target.badCredentials;
    test(title("rejected credentials are a clear error naming the URL and what to check"), async (t) => {
      const store = await badCredentials();
      for (const attempt of [store.list(), store.stat("org--m@main", "model.idx"), store.read("org--m@main", "chunk-00000.bin"), store.beginWrite("org--m@main")]) {
        const error = await t.throwsAsync(attempt, { instanceOf: StoreAccessError });
        t.true(error!.message.startsWith(store.location), error!.message);
        t.regex(error!.message, /access denied .*check/);
      }
    });
  }

  // Only stores reached over a connection have one to drop: for the others this is skipped, and counted so.
  (target.overNetwork ? test : test.skip)(title("a connection dropped mid-chunk is resumed and the bytes still match"), async (t) => {
    const { store, viaProxy } = await target.store();
    if (viaProxy === undefined) throw new Error(`${target.name} is overNetwork but its store() gives no viaProxy`);
    const files = sampleFiles();
    const big = files["chunk-00000.bin"];
    const { store: flaky, proxy } = await viaProxy();
    try {
      // Upload: a part's request is cut half-way; the part is sent again.
      proxy.cutRequestAfter(CONTRACT_PART_SIZE + 1_000_000);
      await putCheckpoint(flaky, "org--m@main", files, Buffer.from("idx"));
      t.is(proxy.cuts, 1);
      t.true(Buffer.from(await store.read("org--m@main", "chunk-00000.bin")).equals(big));
      // Download: the response is cut inside the chunk; the read resumes from the last byte received.
      proxy.cutResponseAfter(3_000_000);
      t.true((await collect(flaky.readRange("org--m@main", "chunk-00000.bin", 7, big.length - 7))).equals(big.subarray(7)));
      t.is(proxy.cuts, 2);
      // A small single-stream read, cut too.
      proxy.cutResponseAfter(700_000);
      t.true((await collect(flaky.readRange("org--m@main", "chunk-00000.bin", 3, 1_000_001))).equals(big.subarray(3, 1_000_004)));
      t.is(proxy.cuts, 3);
    } finally {
      await proxy.close();
    }
  });
}
