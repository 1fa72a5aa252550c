// Element types: safetensors names, the index's Dtype enum and element sizes, in one table.
import { Dtype } from "../gen/thaw/checkpoint/v1/checkpoint_pb.js";

/** One element type as safetensors names it, with its enum value and size in bytes. */
export interface DtypeInfo {
  readonly name: string;
  readonly dtype: Dtype;
  readonly size: number;
}

const TABLE: readonly DtypeInfo[] = [
  { name: "BF16", dtype: Dtype.BF16, size: 2 },
  { name: "F16", dtype: Dtype.F16, size: 2 },
  { name: "F32", dtype: Dtype.F32, size: 4 },
  { name: "F64", dtype: Dtype.F64, size: 8 },
  { name: "F8_E4M3", dtype: Dtype.F8_E4M3, size: 1 },
  { name: "F8_E5M2", dtype: Dtype.F8_E5M2, size: 1 },
  { name: "I8", dtype: Dtype.I8, size: 1 },
  { name: "U8", dtype: Dtype.U8, size: 1 },
  { name: "I16", dtype: Dtype.I16, size: 2 },
  { name: "U16", dtype: Dtype.U16, size: 2 },
  { name: "I32", dtype: Dtype.I32, size: 4 },
  { name: "U32", dtype: Dtype.U32, size: 4 },
  { name: "I64", dtype: Dtype.I64, size: 8 },
  { name: "U64", dtype: Dtype.U64, size: 8 },
  { name: "BOOL", dtype: Dtype.BOOL, size: 1 },
];

const byName = new Map(TABLE.map((d) => [d.name, d]));
const byEnum = new Map(TABLE.map((d) => [d.dtype, d]));

/** Every supported element type. */
export const DTYPES: readonly DtypeInfo[] = TABLE;

/** Looks up a safetensors dtype name ("BF16"); undefined when thaw does not support it. */
export function dtypeFromName(name: string): DtypeInfo | undefined {
  return byName.get(name);
}

/** Looks up an enum value; undefined for DTYPE_UNSPECIFIED or an unknown number. */
export function dtypeInfo(dtype: Dtype): DtypeInfo | undefined {
  return byEnum.get(dtype);
}

/** Size in bytes of one element; throws RangeError for an unknown dtype. */
export function dtypeSize(dtype: Dtype): number {
  const info = byEnum.get(dtype);
  if (info === undefined) throw new RangeError(`unknown dtype ${dtype}`);
  return info.size;
}
