import test from "ava";
import { decodeE4M3, encodeE4M3, E4M3_MAX } from "../../src/tiny-model/float8.js";

test("every finite e4m3 byte round-trips through its value", (t) => {
  for (let b = 0; b < 256; b++) {
    if ((b & 0x7f) === 0x7f) continue; // NaN
    const v = decodeE4M3(b);
    t.is(encodeE4M3(v), b === 0x80 ? 0x80 : b, `byte ${b} (${v})`);
  }
});

test("rounding is to nearest, ties to even, saturating at 448", (t) => {
  t.is(decodeE4M3(encodeE4M3(1.0625)), 1); // halfway between 1 and 1.125: the even mantissa
  t.is(decodeE4M3(encodeE4M3(1.1875)), 1.25); // halfway between 1.125 and 1.25: the even mantissa
  t.is(decodeE4M3(encodeE4M3(1000)), E4M3_MAX);
  t.is(decodeE4M3(encodeE4M3(-1000)), -E4M3_MAX);
  t.is(decodeE4M3(encodeE4M3(2 ** -10)), 0); // half the smallest subnormal: ties to even (0)
  t.is(decodeE4M3(encodeE4M3(3 * 2 ** -10)), 2 ** -8); // 1.5 subnormal steps: ties to even (2)
});
