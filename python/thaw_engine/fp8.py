"""FP8 (float8 e4m3) weights as the Hub publishes them, served as they are where the GPU multiplies
FP8 and dequantized elsewhere.

Two layouts carry a float32 (or bf16) scale beside each quantized ``weight``:
- transformers' ``fp8`` quantization (Qwen3-*-FP8, DeepSeek): ``weight_scale_inv``, one scale per
  block of ``weight_block_size`` (typically 128 × 128), or a single one;
- compressed-tensors ``float-quantized`` (llm-compressor's FP8 models): ``weight_scale``, one per
  tensor (``[1]``/``[]``), per output channel (``[out, 1]``) or per block.
Both multiply: ``w = fp8(weight) * scale`` (a scale of a block covers its rows and columns).

On CPU (and GPUs without FP8 matmuls) the weight is dequantized once at load into the compute dtype.
On CUDA devices of compute capability 8.9 or more (Ada, Hopper) the weight stays FP8 and
``torch._scaled_mm`` multiplies it by activations quantized per token on the fly; _scaled_mm takes
one scale per output row, so block-wise scales are folded into per-row scales at load (the FP8 bytes
are re-rounded once with the row's scale: the weight keeps its byte per element). That path has not
run on a GPU yet (2026-12-03); tests/test_cuda.py holds its check.
"""

from __future__ import annotations

from typing import Optional

import torch

E4M3_MAX = 448.0
_LUT: dict[str, torch.Tensor] = {}


def e4m3_table() -> torch.Tensor:
    """The value of each of the 256 e4m3 ("e4m3fn": no infinities) bytes, float32; NaN for 0x7f and 0xff."""
    b = torch.arange(256, dtype=torch.int64)
    sign = torch.where(b & 0x80 != 0, -1.0, 1.0).double()
    exp = (b >> 3) & 0xF
    mant = (b & 7).double()
    value = torch.where(exp == 0, mant * 2.0**-9, (8 + mant) * torch.pow(2.0, (exp - 10).double()))
    value = torch.where((exp == 15) & (mant == 7), torch.tensor(float("nan"), dtype=torch.float64), value)
    return (sign * value).float()


def is_fp8(t: torch.Tensor) -> bool:
    """A tensor of e4m3 bytes: torch's float8 dtype, or uint8 where torch has none (PyTorch < 2.1)."""
    return t.dtype == torch.uint8 or (hasattr(torch, "float8_e4m3fn") and t.dtype == torch.float8_e4m3fn)


def to_float(raw: torch.Tensor) -> torch.Tensor:
    """float32 values of e4m3 data (torch's float8 dtype, or its raw bytes as uint8)."""
    if raw.dtype != torch.uint8:
        return raw.float()
    key = str(raw.device)
    lut = _LUT.get(key)
    if lut is None:
        lut = _LUT[key] = e4m3_table().to(raw.device)
    return lut[raw.long()]


def encode(x: torch.Tensor) -> torch.Tensor:
    """The nearest e4m3 byte of each value (as uint8; clamped to ±448): FP8 data for PyTorch builds
    without a float8 dtype (benchmarks, tests)."""
    table = e4m3_table()[:0x7F].to(x.device)  # bytes 0..126: the non-negative values, ascending
    a = x.abs().float().clamp(max=E4M3_MAX).contiguous()
    i = torch.searchsorted(table, a).clamp(1, 0x7E)
    lo, hi = table[i - 1], table[i]
    pick = torch.where(a - lo <= hi - a, i - 1, i)
    return (pick | ((x < 0).long() << 7)).to(torch.uint8)


def expand_scale(scale: torch.Tensor, rows: int, cols: int, block: Optional[tuple[int, int]] = None) -> torch.Tensor:
    """The scale of every element of a [rows, cols] weight, float32 (broadcastable)."""
    s = scale.float()
    if s.numel() == 1:
        return s.reshape(1, 1)
    if s.numel() == rows and (s.dim() == 1 or s.shape[-1] == 1):
        return s.reshape(rows, 1)
    if s.dim() != 2:
        raise ValueError(f"a weight scale of shape {tuple(s.shape)} fits no layout of a [{rows}, {cols}] weight")
    br, bc = block if block else (-(-rows // s.shape[0]), -(-cols // s.shape[1]))
    if -(-rows // br) != s.shape[0] or -(-cols // bc) != s.shape[1]:
        raise ValueError(f"a block scale of shape {tuple(s.shape)} does not tile a [{rows}, {cols}] weight in blocks of {br} x {bc}")
    return s.repeat_interleave(br, 0)[:rows].repeat_interleave(bc, 1)[:, :cols]


def dequantize(weight: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype, block: Optional[tuple[int, int]] = None) -> torch.Tensor:
    """The weight in ``dtype``: fp8 values times their scales (computed in float32)."""
    rows, cols = weight.shape
    return (to_float(weight) * expand_scale(scale.to(weight.device), rows, cols, block)).to(dtype)


def scaled_mm_available(device: torch.device) -> bool:
    """torch._scaled_mm can multiply FP8 here (CUDA, compute capability 8.9 or more)."""
    if device.type != "cuda" or not hasattr(torch, "_scaled_mm") or not hasattr(torch, "float8_e4m3fn"):
        return False
    return torch.cuda.get_device_capability(device) >= (8, 9)


class Fp8Linear:
    """A linear layer whose weight stays FP8 on the GPU, with one float32 scale per output row."""

    def __init__(self, weight: torch.Tensor, row_scale: torch.Tensor, out_dtype: torch.dtype) -> None:
        self.weight = weight  # [out, in] float8_e4m3fn
        self.row_scale = row_scale.reshape(1, -1).float().contiguous()  # [1, out]
        self.out_dtype = out_dtype

    @classmethod
    def from_checkpoint(
        cls, weight: torch.Tensor, scale: torch.Tensor, out_dtype: torch.dtype, block: Optional[tuple[int, int]] = None
    ) -> "Fp8Linear":
        """From a checkpoint's weight and scale; block or tensor scales become per-row ones."""
        rows, cols = weight.shape
        w8 = weight.view(torch.float8_e4m3fn) if weight.dtype == torch.uint8 else weight
        s = scale.float().to(weight.device)
        if s.numel() == rows and (s.dim() == 1 or s.shape[-1] == 1):
            return cls(w8, s.reshape(rows), out_dtype)
        if s.numel() == 1:
            return cls(w8, s.reshape(1).expand(rows).contiguous(), out_dtype)
        full = dequantize(w8, s, torch.float32, block)
        row = full.abs().amax(dim=1).clamp(min=1e-12) / E4M3_MAX
        return cls((full / row[:, None]).to(torch.float8_e4m3fn), row, out_dtype)

    @property
    def shape(self) -> torch.Size:
        return self.weight.shape

    @property
    def nbytes(self) -> int:
        return self.weight.numel() + self.row_scale.numel() * 4

    def rows(self, start: int, end: int) -> "Fp8Linear":
        """The rows [start, end) (a fused projection's part), as views."""
        return Fp8Linear(self.weight[start:end], self.row_scale[0, start:end], self.out_dtype)

    def __call__(self, x: torch.Tensor, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
        shape = x.shape
        x2 = x.reshape(-1, shape[-1])
        # activations quantized per token (dynamic), as the FP8 checkpoints' "dynamic" scheme says
        xs = (x2.abs().amax(dim=1, keepdim=True).float().clamp(min=1e-12) / E4M3_MAX)
        x8 = (x2.float() / xs).clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn)
        out = torch._scaled_mm(x8, self.weight.t(), scale_a=xs, scale_b=self.row_scale, bias=bias, out_dtype=self.out_dtype)
        if isinstance(out, tuple):  # torch < 2.5 returned (out, amax)
            out = out[0]
        return out.reshape(*shape[:-1], self.weight.shape[0])
