import test from "ava";
import { DTYPES, dtypeFromName, dtypeInfo, dtypeSize } from "../../src/checkpoint/dtype.js";
import { Dtype } from "../../src/gen/thaw/checkpoint/v1/checkpoint_pb.js";

test("every safetensors dtype maps to an enum value and back, with its size", (t) => {
  const expected: Record<string, number> = {
    BF16: 2, F16: 2, F32: 4, F64: 8, F8_E4M3: 1, F8_E5M2: 1, I8: 1, U8: 1,
    I16: 2, U16: 2, I32: 4, U32: 4, I64: 8, U64: 8, BOOL: 1,
  };
  t.deepEqual(DTYPES.map((d) => d.name).sort(), Object.keys(expected).sort());
  for (const [name, size] of Object.entries(expected)) {
    const info = dtypeFromName(name);
    t.truthy(info, name);
    t.is(info!.size, size, name);
    t.is(dtypeInfo(info!.dtype)?.name, name);
    t.is(dtypeSize(info!.dtype), size);
    t.is(Dtype[info!.dtype], name, "enum member is named like the safetensors dtype");
  }
});

test("unknown dtypes are rejected", (t) => {
  t.is(dtypeFromName("F4"), undefined);
  t.is(dtypeFromName("bf16"), undefined);
  t.is(dtypeInfo(Dtype.UNSPECIFIED), undefined);
  t.throws(() => dtypeSize(Dtype.UNSPECIFIED), { instanceOf: RangeError });
});
