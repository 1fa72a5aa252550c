// Argument checks shared by the native facades: wrong types throw TypeError, values out of
// range throw RangeError, before anything reaches C++.

/** A non-negative safe integer. */
export function checkUint(value: unknown, name: string): number {
  if (typeof value !== "number") throw new TypeError(`${name} must be a number, got ${typeof value}`);
  if (!Number.isSafeInteger(value) || value < 0) {
    throw new RangeError(`${name} must be a non-negative safe integer, got ${value}`);
  }
  return value;
}

/** A positive safe integer. */
export function checkPositive(value: unknown, name: string): number {
  checkUint(value, name);
  if ((value as number) === 0) throw new RangeError(`${name} must be positive`);
  return value as number;
}

/** An optional integer in [min, max]. */
export function checkOptionalInt(value: unknown, name: string, min: number, max: number): number | undefined {
  if (value === undefined) return undefined;
  checkUint(value, name);
  if ((value as number) < min || (value as number) > max) {
    throw new RangeError(`${name} must lie in [${min}, ${max}], got ${value}`);
  }
  return value as number;
}

/** A non-empty string. */
export function checkString(value: unknown, name: string): string {
  if (typeof value !== "string") throw new TypeError(`${name} must be a string, got ${typeof value}`);
  if (value.length === 0) throw new RangeError(`${name} must not be empty`);
  return value;
}

/** One of the listed strings. */
export function checkChoice<T extends string>(value: unknown, name: string, choices: readonly T[]): T {
  if (typeof value !== "string") throw new TypeError(`${name} must be a string, got ${typeof value}`);
  if (!(choices as readonly string[]).includes(value)) {
    throw new RangeError(`${name} must be one of ${choices.join(", ")}, got ${value}`);
  }
  return value as T;
}

/** An AbortSignal or nothing. */
export function checkSignal(value: unknown): AbortSignal | undefined {
  if (value === undefined) return undefined;
  if (!(value instanceof AbortSignal)) throw new TypeError("signal must be an AbortSignal");
  return value;
}

/** Converts a uint64 proto field to a number, refusing values past 2^53. */
export function safeNumber(value: bigint | number, name: string): number {
  const n = typeof value === "bigint" ? Number(value) : value;
  if (!Number.isSafeInteger(n) || n < 0) throw new RangeError(`${name} is not a safe non-negative integer: ${value}`);
  return n;
}

export const ALIGNMENT = 4096;

/** Rounds up to a multiple of 4096. */
export function alignUp(n: number): number {
  return Math.ceil(n / ALIGNMENT) * ALIGNMENT;
}
