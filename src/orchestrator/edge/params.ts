// Typed reads of request fields with OpenAI-style 400s that name the offending parameter.
// Fields nobody reads are ignored, as OpenAI and vLLM do.
import { badRequest } from "./errors.js";

interface NumberRule {
  min?: number;
  max?: number;
  /** An exclusive min. */
  above?: number;
  /** An exclusive max. */
  below?: number;
  integer?: boolean;
}

/** Largest value of a proto uint32 field. */
export const UINT32_MAX = 0xffffffff;
/** Largest finite value of a proto float field (IEEE 754 single precision). */
export const FLOAT32_MAX = 3.4028234663852886e38;

export class Params {
  constructor(readonly body: Record<string, unknown>) {}

  /** True when the field is present and not null. */
  has(name: string): boolean {
    return this.body[name] !== undefined && this.body[name] !== null;
  }

  number(name: string, rule: NumberRule = {}): number | undefined {
    const v = this.body[name];
    if (v === undefined || v === null) return undefined;
    if (typeof v !== "number" || !Number.isFinite(v)) throw badRequest(`'${name}' must be a number, got ${describe(v)}`, name);
    return checked(name, v, rule);
  }

  integer(name: string, rule: Omit<NumberRule, "integer"> = {}): number | undefined {
    return this.number(name, { ...rule, integer: true });
  }

  /** An integer that fits a proto uint32 field (0 … 4294967295) and `rule`. */
  uint32(name: string, rule: Omit<NumberRule, "integer"> = {}): number | undefined {
    return this.number(name, { min: 0, ...rule, max: Math.min(rule.max ?? UINT32_MAX, UINT32_MAX), integer: true });
  }

  /**
   * A number that fits a proto float field, checked against `rule` as the float it becomes (1e39
   * is refused rather than failing serialization, and 1e-50 is 0, which fails "greater than 0").
   */
  float32(name: string, rule: Omit<NumberRule, "integer"> = {}): number | undefined {
    const v = this.number(name);
    if (v === undefined) return undefined;
    if (Math.abs(v) > FLOAT32_MAX) throw badRequest(`'${name}' must be between -${FLOAT32_MAX} and ${FLOAT32_MAX} (a 32-bit float), got ${v}`, name);
    return checked(name, Math.fround(v), rule);
  }

  string(name: string): string | undefined {
    const v = this.body[name];
    if (v === undefined || v === null) return undefined;
    if (typeof v !== "string") throw badRequest(`'${name}' must be a string, got ${describe(v)}`, name);
    return v;
  }

  boolean(name: string): boolean | undefined {
    const v = this.body[name];
    if (v === undefined || v === null) return undefined;
    if (typeof v !== "boolean") throw badRequest(`'${name}' must be a boolean, got ${describe(v)}`, name);
    return v;
  }

  object(name: string): Record<string, unknown> | undefined {
    const v = this.body[name];
    if (v === undefined || v === null) return undefined;
    if (typeof v !== "object" || Array.isArray(v)) throw badRequest(`'${name}' must be an object, got ${describe(v)}`, name);
    return v as Record<string, unknown>;
  }

  /** A string or a list of strings, as a list. */
  strings(name: string): string[] | undefined {
    const v = this.body[name];
    if (v === undefined || v === null) return undefined;
    if (typeof v === "string") return [v];
    if (Array.isArray(v) && v.every((s) => typeof s === "string")) return v as string[];
    throw badRequest(`'${name}' must be a string or a list of strings`, name);
  }

  /** A list of non-negative integers (token ids). */
  tokenIds(name: string): number[] | undefined {
    const v = this.body[name];
    if (v === undefined || v === null) return undefined;
    if (Array.isArray(v) && v.every(isTokenId)) return v as number[];
    throw badRequest(`'${name}' must be a list of token ids (non-negative integers)`, name);
  }
}

function checked(name: string, v: number, rule: NumberRule): number {
  if (rule.integer && !Number.isInteger(v)) throw badRequest(`'${name}' must be an integer, got ${v}`, name);
  if (rule.min !== undefined && v < rule.min) throw badRequest(`'${name}' must be at least ${rule.min}, got ${v}`, name);
  if (rule.above !== undefined && v <= rule.above) throw badRequest(`'${name}' must be greater than ${rule.above}, got ${v}`, name);
  if (rule.max !== undefined && v > rule.max) throw badRequest(`'${name}' must be at most ${rule.max}, got ${v}`, name);
  if (rule.below !== undefined && v >= rule.below) throw badRequest(`'${name}' must be less than ${rule.below}, got ${v}`, name);
  return v;
}

export function isTokenId(x: unknown): x is number {
  return typeof x === "number" && Number.isInteger(x) && x >= 0 && x <= 0xffffffff;
}

export function describe(v: unknown): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return "a list";
  if (typeof v === "string") return JSON.stringify(v.length > 40 ? `${v.slice(0, 40)}…` : v);
  if (typeof v === "object") return "an object";
  return String(v);
}
