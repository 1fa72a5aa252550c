// float8 e4m3 ("e4m3fn": no infinities, largest finite 448) in plain arithmetic, for the tiny FP8
// models: round to nearest even, saturating at ±448 as FP8 quantizers do.

/** Largest finite e4m3 value. */
export const E4M3_MAX = 448;

/** The e4m3 byte nearest to x (ties to even), clamped to ±448. */
export function encodeE4M3(x: number): number {
  const sign = x < 0 || Object.is(x, -0) ? 0x80 : 0;
  const a = Math.abs(x);
  if (a >= E4M3_MAX) return sign | 0x7e;
  let e = -6; // below 2^-6 the format is subnormal, with the step of exponent -6
  while (e < 8 && a >= 2 ** (e + 1)) e++;
  const step = 2 ** (e - 3);
  const q = a / step; // exact: a power-of-two division
  const floor = Math.floor(q);
  const rest = q - floor;
  let r = rest > 0.5 || (rest === 0.5 && floor % 2 === 1) ? floor + 1 : floor;
  if (a < 2 ** -6) return sign | r; // subnormal (r = 8 is the smallest normal, bits 0b0001000)
  if (r === 16) {
    e++;
    r = 8;
  }
  if (e > 8 || (e === 8 && r > 14)) return sign | 0x7e;
  return sign | ((e + 7) << 3) | (r - 8);
}

/** The value of an e4m3 byte (NaN for 0x7f/0xff). */
export function decodeE4M3(byte: number): number {
  const sign = byte & 0x80 ? -1 : 1;
  const exp = (byte >> 3) & 0xf;
  const mant = byte & 7;
  if (exp === 15 && mant === 7) return NaN;
  if (exp === 0) return sign * mant * 2 ** -9;
  return sign * (8 + mant) * 2 ** (exp - 10);
}
