import test from "ava";
import { randomBytes } from "node:crypto";
import { crc32c, crc32cCombine, crc32cSync } from "../../src/native/checksum.js";

// Bitwise reference, independent of the native table and hardware paths.
function reference(data: Uint8Array, crc = 0): number {
  crc = ~crc >>> 0;
  for (const byte of data) {
    crc ^= byte;
    for (let k = 0; k < 8; k++) crc = crc & 1 ? (crc >>> 1) ^ 0x82f63b78 : crc >>> 1;
  }
  return ~crc >>> 0;
}

test("known answer: CRC-32C of '123456789' is e3069283", (t) => {
  t.is(crc32cSync(new TextEncoder().encode("123456789")), 0xe3069283);
});

test("matches the bitwise reference across the three-lane path, odd lengths and unaligned starts", async (t) => {
  const big = randomBytes(200_000);
  for (const [start, length] of [
    [0, 0],
    [1, 7],
    [3, 24_575],
    [0, 24_576],
    [5, 24_577],
    [7, 3 * 24_576 + 13],
    [0, 199_999],
  ]) {
    const view = big.subarray(start, start + length);
    t.is(await crc32c(view), reference(view), `start ${start} length ${length}`);
  }
  const huge = randomBytes(3 << 20); // the asynchronous path
  t.is(await crc32c(huge), reference(huge));
});

test("chaining and combining agree with one pass", (t) => {
  const a = randomBytes(100_003);
  const b = randomBytes(77_777);
  const whole = reference(Buffer.concat([a, b]));
  t.is(crc32cSync(b, crc32cSync(a)), whole);
  t.is(crc32cCombine(crc32cSync(a), crc32cSync(b), b.length), whole);
  t.is(crc32cCombine(0, crc32cSync(b), b.length), crc32cSync(b));
  t.is(crc32cCombine(crc32cSync(a), 0, 0), crc32cSync(a));
});

test("bad arguments throw before reaching native code", (t) => {
  t.throws(() => crc32cSync(new Uint8Array(1), -1), { instanceOf: RangeError });
  t.throws(() => crc32cCombine(0, 0, -5), { instanceOf: RangeError });
});
