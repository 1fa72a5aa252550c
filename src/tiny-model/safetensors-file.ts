// Serialises tensors as a safetensors file (the format Hugging Face writes): 8-byte little-endian
// header length, a JSON header padded with spaces to 8 bytes, then data.

/** A named float32 tensor. */
export interface F32Tensor {
  name: string;
  shape: number[];
  data: Float32Array;
}

/** A named tensor of raw float8 e4m3 bytes (quantized checkpoints). */
export interface F8Tensor {
  name: string;
  shape: number[];
  dtype: "F8_E4M3";
  data: Uint8Array;
}

export type SafetensorsTensor = F32Tensor | F8Tensor;

function dtypeOf(t: SafetensorsTensor): string {
  return "dtype" in t ? t.dtype : "F32";
}

export function encodeSafetensors(tensors: SafetensorsTensor[], metadata: Record<string, string> = {}): Buffer {
  const header: Record<string, unknown> = { __metadata__: metadata };
  let offset = 0;
  for (const t of tensors) {
    const bytes = t.data.byteLength;
    header[t.name] = { dtype: dtypeOf(t), shape: t.shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  let json = JSON.stringify(header);
  json += " ".repeat((8 - (Buffer.byteLength(json) % 8)) % 8);
  const headerBytes = Buffer.from(json, "utf8");
  const out = Buffer.alloc(8 + headerBytes.length + offset);
  out.writeBigUInt64LE(BigInt(headerBytes.length), 0);
  headerBytes.copy(out, 8);
  let at = 8 + headerBytes.length;
  for (const t of tensors) {
    // Little-endian float32 on every platform thaw runs on; copy the raw bytes.
    Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength).copy(out, at);
    at += t.data.byteLength;
  }
  return out;
}
