"""Focused checks of what the new families add: MoE routing, sliding-window edges, soft-capping and
FP8 dequantization (CPU; the end-to-end agreement with transformers is in test_hf_fixtures.py)."""

from __future__ import annotations

import random

import pytest
import torch

from thaw_engine import fp8
from thaw_engine.config import parse_config
from thaw_engine.model import DecoderModel, softcap
from thaw_engine.runner import PrefillItem
from thaw_engine.sampling import SamplingOptions

GREEDY = SamplingOptions(temperature=0.0, max_tokens=12, ignore_eos=True)


def _prompt(n: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    return [256] + [rng.randrange(256) for _ in range(n - 1)]


def _last_logits(lm, prompt: list[int]) -> torch.Tensor:
    bs = lm.runner.block_size
    blocks = lm.engine.blocks.allocate(-(-len(prompt) // bs))
    try:
        return lm.runner.prefill([PrefillItem(prompt, 0, blocks)])[0].clone()
    finally:
        lm.engine.blocks.release(blocks)


# ---- MoE routing -------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["qwen3-moe", "mixtral"])
def test_routing_picks_the_top_k_experts_and_weighs_them(arch, tiny_checkpoints, load_model):
    lm = load_model(tiny_checkpoints[arch])
    model: DecoderModel = lm.model
    moe = model.cfg.moe
    assert moe is not None and moe.norm_topk_prob  # both tiny models renormalise (Mixtral always does)
    layer = next(layer for layer in model.layers if layer.experts is not None)
    ex = layer.experts
    h = torch.randn(9, model.cfg.hidden_size)
    weights, idx = model.route(h, ex)
    probs = torch.softmax(h @ ex.router.T, dim=-1)
    for t in range(9):
        want = torch.argsort(probs[t], descending=True)[: moe.top_k]
        assert set(idx[t].tolist()) == set(want.tolist())
        assert weights[t].sum().item() == pytest.approx(1.0, abs=1e-6)
        assert weights[t].tolist() == pytest.approx((probs[t, idx[t]] / probs[t, idx[t]].sum()).tolist(), abs=1e-6)
    # one token's output is the weighted sum of its experts' MLPs, computed by hand
    out = model._moe_loop(h, ex, weights, idx)
    t = 4
    by_hand = sum(
        weights[t, j] * (torch.nn.functional.silu(h[t] @ ex.gate[e].T) * (h[t] @ ex.up[e].T)) @ ex.down[e].T
        for j, e in enumerate(idx[t].tolist())
    )
    assert torch.allclose(out[t], by_hand, atol=1e-6)
    # the batched path (gathered weights, one bmm) gives the reference's result
    assert torch.allclose(model._moe_gathered(h, ex, weights, idx), out, atol=1e-6)


def test_routing_without_renormalisation_keeps_softmax_weights():
    base = {"architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe", "vocab_size": 32, "hidden_size": 16,
            "intermediate_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1,
            "head_dim": 8, "num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 8,
            "norm_topk_prob": False, "mlp_only_layers": [1], "decoder_sparse_step": 1}
    cfg = parse_config(base)
    assert cfg.moe is not None and cfg.moe.sparse_layers == frozenset({0}) and not cfg.moe.norm_topk_prob
    g = torch.Generator().manual_seed(0)
    r = lambda *s: torch.randn(*s, generator=g) * 0.1  # noqa: E731
    w = {"model.embed_tokens.weight": r(32, 16), "model.norm.weight": torch.ones(16), "lm_head.weight": r(32, 16)}
    for i in range(2):
        p = f"model.layers.{i}."
        w.update({p + "input_layernorm.weight": torch.ones(16), p + "post_attention_layernorm.weight": torch.ones(16),
                  p + "self_attn.q_proj.weight": r(16, 16), p + "self_attn.k_proj.weight": r(8, 16), p + "self_attn.v_proj.weight": r(8, 16),
                  p + "self_attn.o_proj.weight": r(16, 16), p + "self_attn.q_norm.weight": torch.ones(8), p + "self_attn.k_norm.weight": torch.ones(8)})
    w.update({"model.layers.0.mlp.gate.weight": r(4, 16)})
    for e in range(4):
        w.update({f"model.layers.0.mlp.experts.{e}.{n}.weight": r(*s) for n, s in (("gate_proj", (8, 16)), ("up_proj", (8, 16)), ("down_proj", (16, 8)))})
    w.update({"model.layers.1.mlp.gate_proj.weight": r(32, 16), "model.layers.1.mlp.up_proj.weight": r(32, 16), "model.layers.1.mlp.down_proj.weight": r(16, 32)})
    model = DecoderModel(cfg, w, torch.float32, torch.device("cpu"), 64)
    ex = model.layers[0].experts
    assert ex is not None and model.layers[1].experts is None
    h = r(5, 16)
    weights, idx = model.route(h, ex)
    probs = torch.softmax(h @ ex.router.T, dim=-1)
    assert torch.allclose(weights, probs.gather(1, idx))
    assert (weights.sum(dim=1) < 1).all()


# ---- sliding windows -----------------------------------------------------------------------------


def test_a_token_beyond_every_layers_reach_changes_nothing(tiny_checkpoints, load_model):
    """Mistral with a window of 48 in 4 layers: the last token sees at most 4 x 47 positions back. A
    token further back changes nothing; one inside the window changes the logits."""
    lm = load_model(tiny_checkpoints["mistral-sliding"], kv_bytes=16 << 20)
    window = lm.model.cfg.sliding_window
    assert window == 48 and lm.runner.max_model_len == 2048  # the window does not cap the context
    prompt = _prompt(300, 1)
    base = _last_logits(lm, prompt)
    far = list(prompt)
    far[299 - 4 * (window - 1) - 1] ^= 1
    assert torch.equal(_last_logits(lm, far), base)
    near = list(prompt)
    near[299 - (window - 1)] ^= 1  # the oldest token of the last layer's window
    assert not torch.allclose(_last_logits(lm, near), base)


def test_window_edges_in_the_decode_mask(tiny_checkpoints, load_model):
    """Decoding past the window (prompt 47, 48 and 49 tokens, then 60 more) gives the same tokens as
    one prefill of each whole sequence: the decode mask and the prefill mask keep the same keys."""
    lm = load_model(tiny_checkpoints["mistral-sliding"], kv_bytes=16 << 20)
    for n in (47, 48, 49):
        prompt = _prompt(n, n)
        out = lm.engine.generate([prompt], SamplingOptions(temperature=0.0, max_tokens=60, ignore_eos=True))[0].token_ids
        seq = prompt + out
        for cut in (48, 49, 70, len(seq) - 1):
            if cut <= n:
                continue
            assert int(_last_logits(lm, seq[:cut]).argmax()) == seq[cut], f"prompt {n}, position {cut}"


def test_mixed_layers_slide_only_where_configured(tiny_checkpoints, load_model):
    lm = load_model(tiny_checkpoints["gemma3"], kv_bytes=16 << 20)
    assert [layer.sliding for layer in lm.model.layers] == [True, False, True, False]
    assert [layer.local_rope for layer in lm.model.layers] == [True, False, True, False]
    assert set(lm.model.ropes) == {False, True}


# ---- soft-capping ---------------------------------------------------------------------------------


def test_softcap_function():
    x = torch.tensor([-100.0, -1.0, 0.0, 0.5, 100.0])
    y = softcap(x, 3.5)
    assert torch.allclose(y, 3.5 * torch.tanh(x / 3.5))
    assert y.abs().max().item() <= 3.5 and y[2].item() == 0.0 and abs(y[3].item() - 0.5) < 0.01  # near 0 it is the identity


def test_gemma2_logits_and_scores_are_capped(tiny_checkpoints, load_model):
    lm = load_model(tiny_checkpoints["gemma2"], kv_bytes=16 << 20)
    cfg = lm.model.cfg
    assert (cfg.attn_softcap, cfg.final_softcap) == (2.5, 3.5)
    prompt = _prompt(120, 3)
    capped = _last_logits(lm, prompt)
    assert capped.abs().max().item() < 3.5
    # the caps bind on the tiny model: without them the logits differ
    lm.model.cfg = cfg.__class__(**{**cfg.__dict__, "final_softcap": None, "attn_softcap": None})
    uncapped = _last_logits(lm, prompt)
    lm.model.cfg = cfg
    assert (uncapped - capped).abs().max().item() > 0.1
    assert not torch.allclose(softcap(uncapped, 3.5), capped, atol=1e-5)  # the attention cap matters too


# ---- FP8 dequantization ---------------------------------------------------------------------------


def test_e4m3_table():
    t = fp8.e4m3_table()
    assert t[0].item() == 0.0 and t[0x80].item() == 0.0
    assert t[0x01].item() == 2.0**-9  # smallest subnormal
    assert t[0x08].item() == 2.0**-6  # smallest normal
    assert t[0x38].item() == 1.0 and t[0xB8].item() == -1.0
    assert t[0x7E].item() == 448.0 and t[0xFE].item() == -448.0
    assert torch.isnan(t[0x7F]) and torch.isnan(t[0xFF])
    finite = t[~torch.isnan(t)]
    assert finite.unique().numel() == 253  # 254 finite bytes, +0 and -0 equal
    if hasattr(torch, "float8_e4m3fn"):
        assert torch.equal(torch.arange(256, dtype=torch.uint8).view(torch.float8_e4m3fn).float().nan_to_num(7.0), t.nan_to_num(7.0))


def test_dequantize_block_channel_and_tensor_scales():
    g = torch.Generator().manual_seed(1)
    raw = torch.randint(0, 0x7E, (70, 45), generator=g, dtype=torch.int64).to(torch.uint8)  # finite positive bytes
    values = fp8.e4m3_table()[raw.long()]
    block = torch.rand(3, 2, generator=g) + 0.5  # 32 x 32 blocks over 70 x 45: ragged last row and column of blocks
    got = fp8.dequantize(raw, block, torch.float32, (32, 32))
    for r, c in ((0, 0), (31, 31), (32, 0), (69, 44), (64, 32), (40, 33)):
        assert got[r, c].item() == pytest.approx(values[r, c].item() * block[r // 32, c // 32].item())
    channel = torch.rand(70, 1, generator=g)
    assert torch.allclose(fp8.dequantize(raw, channel, torch.float32), values * channel)
    tensor = torch.tensor([0.25])
    assert torch.equal(fp8.dequantize(raw, tensor, torch.float32), values * 0.25)
    with pytest.raises(ValueError):
        fp8.dequantize(raw, torch.rand(4, 4), torch.float32, (32, 32))  # does not tile 70 x 45


def test_fp8_model_matches_its_dequantized_float_twin(tiny_checkpoints, load_model):
    """The FP8 checkpoint loads with every Linear dequantized on CPU, close to the float model it was
    quantized from (FP8 rounding apart)."""
    lm = load_model(tiny_checkpoints["qwen3-fp8"], kv_bytes=16 << 20)
    assert lm.model.dequantized_weights == 28 and lm.model.fp8_weights == 0
    plain = load_model(tiny_checkpoints["qwen3"], kv_bytes=16 << 20)
    prompt = _prompt(40, 4)
    a, b = _last_logits(lm, prompt), _last_logits(plain, prompt)
    # e4m3 keeps 3 mantissa bits: each weight is within 1/16 of itself, the logits stay aligned
    assert torch.nn.functional.cosine_similarity(a, b, dim=0).item() > 0.98


def test_e4m3_encode_is_the_nearest_byte():
    t = fp8.e4m3_table()
    finite = torch.tensor([b for b in range(256) if b & 0x7F != 0x7F and b != 0x80])
    assert torch.equal(fp8.encode(t[finite]), finite.to(torch.uint8))
    x = torch.tensor([1.06, 1.07, -500.0, 2.0**-9 * 0.4])
    assert fp8.to_float(fp8.encode(x)).tolist() == [1.0, 1.125, -448.0, 0.0]  # nearest; saturated; below half the smallest subnormal


@pytest.mark.parametrize("arch", ["qwen3-moe", "mixtral"])
def test_experts_stack_as_views_on_a_converted_checkpoint(arch, tiny_checkpoints, load_model):
    """The converter writes each projection's experts in expert order, evenly spaced: the batched MoE
    paths stack them without copying a byte."""
    lm = load_model(tiny_checkpoints[arch])
    model = lm.model
    before = model.converted_bytes
    for layer in model.layers:
        if layer.experts is None:
            continue
        gate, up, down = model.stacked_experts(layer.experts)
        assert gate.data_ptr() == layer.experts.gate[0].data_ptr() and down.data_ptr() == layer.experts.down[0].data_ptr()
        for e in range(len(layer.experts.gate)):
            assert torch.equal(gate[e], layer.experts.gate[e]) and torch.equal(up[e], layer.experts.up[e]) and torch.equal(down[e], layer.experts.down[e])
    assert model.converted_bytes == before
