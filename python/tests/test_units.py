"""Config parsing, rotary tables, CRC-32C and the block allocator."""

from __future__ import annotations

import json
import math
import random

import pytest
import torch

from thaw_engine.config import ConfigError, parse_config
from thaw_engine.crc32c import crc32c, crc32c_numpy
from thaw_engine.kv_cache import BlockManager, KvPool, PagePool, PoolFull
from thaw_engine.rope import inv_freq_and_scale

BASE = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "vocab_size": 512,
    "hidden_size": 128,
    "intermediate_size": 352,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 2048,
    "eos_token_id": [257, 260],
}
LLAMA3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 256}


def test_old_and_new_rope_keys_agree():
    old = parse_config({**BASE, "rope_theta": 500000.0, "rope_scaling": LLAMA3})
    new = parse_config({**BASE, "rope_parameters": {"rope_theta": 500000.0, **LLAMA3}})
    assert old.rope == new.rope
    assert old.rope.theta == 500000.0 and old.rope.rope_type == "llama3"
    assert old.head_dim == 32 and old.num_kv_heads == 2 and old.eos_token_ids == (257, 260)
    plain = parse_config({**BASE, "rope_parameters": {"rope_type": "default", "rope_theta": 1e6}})
    assert plain.rope.rope_type == "default" and plain.rope.theta == 1e6
    assert parse_config(json.dumps(BASE)).rope.theta == 10000.0


def test_llama3_rope_frequencies():
    cfg = parse_config({**BASE, "rope_theta": 500000.0, "rope_scaling": LLAMA3})
    inv, scale = inv_freq_and_scale(cfg)
    base = 1.0 / (500000.0 ** (torch.arange(0, 32, 2).float() / 32))
    wavelen = 2 * math.pi / base
    assert scale == 1.0
    for f, b, w in zip(inv.tolist(), base.tolist(), wavelen.tolist()):
        if w < 256 / 4:
            assert f == pytest.approx(b)  # high frequencies unchanged
        elif w > 256 / 1:
            assert f == pytest.approx(b / 8)  # low frequencies divided by the factor
        else:
            assert b / 8 <= f <= b


def test_unsupported_configs_are_refused():
    with pytest.raises(ConfigError):
        parse_config({**BASE, "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2"})
    with pytest.raises(ConfigError):
        parse_config({**BASE, "rope_scaling": {"rope_type": "longrope", "factor": 2.0}})
    with pytest.raises(ConfigError):
        parse_config("{not json")
    q = parse_config({**BASE, "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "sliding_window": 4096, "use_sliding_window": False})
    assert q.sliding_window is None


def test_crc32c_known_values():
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c_numpy(b"123456789") == 0xE3069283
    assert crc32c_numpy(b"") == 0
    assert crc32c_numpy(bytes(32)) == 0x8A9136AA


def test_crc32c_numpy_matches_bytewise_reference():
    from thaw_engine.crc32c import _crc_small

    rng = random.Random(1)
    for n in (63, 64, 65, 4095, 4096, 4097, 3 * 4096 + 5, 70000):
        data = bytes(rng.randrange(256) for _ in range(n))
        assert crc32c_numpy(data) == _crc_small(data), n


def test_block_manager_prefix_reuse_and_eviction():
    bm = BlockManager(PagePool(5), block_size=4)
    assert bm.usable_blocks == 4 and bm.num_free() == 4
    toks = list(range(12))
    hashes = bm.prefix_hashes(toks, 3)
    blocks = bm.allocate(3)
    assert blocks is not None and 0 not in blocks
    for b, h in zip(blocks, hashes):
        bm.register(b, h)
    bm.release(blocks)
    assert bm.used == 0 and bm.num_free() == 4
    assert bm.count_prefix(hashes) == (3, 3)
    got = bm.match_prefix(hashes[:2])
    assert got == blocks[:2] and bm.used == 2
    # a different prefix shares nothing
    assert bm.count_prefix(bm.prefix_hashes([99] + toks[1:], 3)) == (0, 0)
    # allocation evicts the cached (unreferenced) block last, after the free one
    more = bm.allocate(2)
    assert more is not None and blocks[2] in more
    assert bm.count_prefix(hashes) == (2, 0)
    assert bm.allocate(1) is None
    bm.release(got + more)
    assert bm.used == 0


class _Tenant:
    """A model's sequences, as the pool sees them: lists of pages, the latest preempted first."""

    def __init__(self, pool: PagePool, floor: int = 0, tag: str = "f32") -> None:
        self.seqs: list[list[int]] = []
        self.bm = BlockManager(pool, 4, floor=floor, tag=tag, preempt=self.preempt)
        pool.attach(self.bm)

    def run(self, pages: int) -> bool:
        got = self.bm.allocate(pages)
        if got is not None:
            self.seqs.append(got)
        return got is not None

    def preempt(self) -> bool:
        if not self.seqs:
            return False
        self.bm.release(self.seqs.pop())
        return True


def test_page_pool_reclaims_the_least_recently_freed_cached_page_of_any_model():
    pool = PagePool(7)  # 6 usable pages
    a, b = _Tenant(pool), _Tenant(pool)
    assert a.run(3) and b.run(3) and pool.available() == 0
    for i, p in enumerate(a.seqs[0]):
        a.bm.register(p, bytes([i]) * 16)
    b.bm.register(b.seqs[0][0], b"b" * 16)
    a.bm.release(a.seqs.pop())  # three cached pages of a
    b.bm.release(b.seqs.pop())  # one cached page of b, two free
    assert a.bm.cached == 3 and b.bm.cached == 1 and a.bm.used == b.bm.used == 0
    assert a.bm.count_prefix([bytes([0]) * 16, bytes([1]) * 16]) == (2, 2)
    assert b.run(4)  # two free pages, then a's two least recently freed
    assert a.bm.cached == 1 and b.bm.cached == 1 and pool.reclaimed == 2
    assert a.bm.count_prefix([bytes([0]) * 16]) == (0, 0)  # its first blocks went first
    assert b.run(2)  # a's last cached page, then b's own
    assert a.bm.cached == b.bm.cached == 0 and pool.available() == 0 and not b.run(1)


def test_page_pool_floors_are_guarantees_not_reservations():
    pool = PagePool(11)  # 10 usable pages
    a, b = _Tenant(pool, floor=4), _Tenant(pool, floor=3)
    with pytest.raises(PoolFull):
        pool.attach(BlockManager(pool, 4, floor=4))  # 4 + 3 + 4 > 10
    for _ in range(4):
        assert a.run(2)  # a grows into b's floor while b is idle
    assert a.bm.used == 8 and pool.available() == 2
    assert b.run(2) and b.run(2)  # b below its floor: a's latest sequence is preempted
    assert a.bm.used == 6 and b.bm.used == 4 and pool.floor_preemptions == 1
    assert not b.run(2)  # above its floor, b cannot take more from a (nor preempt it)
    assert a.bm.used == 6
    assert a.run(2) is False  # full; a (above its floor) gets nothing from b either
    b.bm.release(b.seqs.pop())
    assert a.run(2)
    with pytest.raises(RuntimeError):
        pool.detach(b.bm)  # still holds pages


def test_page_pool_preempts_only_models_above_their_floor():
    pool = PagePool(9)  # 8 usable
    a, b = _Tenant(pool, floor=4), _Tenant(pool, floor=4)
    assert a.run(4) and b.run(2) and b.run(2)
    assert pool.available() == 0
    assert not a.run(1)  # a at its floor: b is at its floor too, nothing to preempt
    assert b.bm.used == 4 and pool.floor_preemptions == 0


def test_pages_change_dtype_are_scrubbed():
    kv = KvPool(4, 1024, torch.device("cpu"))
    pool = PagePool(4, kv.scrub)
    kv.data.fill_(0xFF)  # bytes that read as NaN in any float dtype
    a, b = _Tenant(pool, tag="bf16"), _Tenant(pool, tag="f32")
    assert a.run(3)
    a.bm.release(a.seqs.pop())
    b.run(3)
    assert all(int(kv.data.view(4, 1024)[p].max()) == 0 for p in b.seqs[0])  # written by bf16, read as f32


def test_pool_views_place_every_layer_of_a_block_on_its_page():
    kv = KvPool(3, 4096, torch.device("cpu"))
    views = kv.views(num_layers=2, num_kv_heads=2, head_dim=8, dtype=torch.float32, block_tokens=4)
    assert kv.block_tokens(2, 2, 8, torch.float32, 16) == 4096 // (2 * 2 * 2 * 8 * 4)
    for layer, (k, v) in enumerate(views):
        assert k.shape == (2, 3, 4, 8)
        k[:, 2].fill_(10 + layer)
        v[:, 2].fill_(20 + layer)
    page = kv.data.view(torch.float32).view(3, 1024)
    assert page[2, : 4 * 64].tolist() == [10.0] * 64 + [20.0] * 64 + [11.0] * 64 + [21.0] * 64
    assert page[1].abs().sum() == 0 and page[0].abs().sum() == 0
    with pytest.raises(PoolFull):
        kv.views(num_layers=2, num_kv_heads=2, head_dim=8, dtype=torch.float32, block_tokens=17)  # 4352 bytes > 4096


def test_converter_serves_the_architectures_the_engine_serves():
    """src/converter/model-config.ts refuses at conversion what this engine would refuse at load."""
    import re
    from pathlib import Path

    from thaw_engine.config import SUPPORTED_ARCHITECTURES

    ts = (Path(__file__).resolve().parents[2] / "src" / "converter" / "model-config.ts").read_text(encoding="utf-8")
    block = ts[ts.index("SERVED_ARCHITECTURES"):]
    block = block[: block.index("};")]
    served = dict(re.findall(r"(\w+): \"(\w+)\"", block))
    assert served == SUPPORTED_ARCHITECTURES


def test_sliding_window_layer_rules_per_family():
    """Which layers slide when config.json has no layer_types (transformers' rules per family)."""
    gemma2 = parse_config({**BASE, "architectures": ["Gemma2ForCausalLM"], "model_type": "gemma2", "sliding_window": 64})
    assert gemma2.layer_types == ("sliding_attention", "full_attention") * 2
    gemma3 = parse_config({**BASE, "architectures": ["Gemma3ForCausalLM"], "model_type": "gemma3_text", "sliding_window": 64, "num_hidden_layers": 12})
    assert [i for i, t in enumerate(gemma3.layer_types) if t == "full_attention"] == [5, 11]  # sliding_window_pattern 6
    qwen2 = parse_config({**BASE, "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "sliding_window": 64, "use_sliding_window": True, "max_window_layers": 3})
    assert qwen2.layer_types == ("full_attention",) * 3 + ("sliding_attention",)
    mistral = parse_config({**BASE, "architectures": ["MistralForCausalLM"], "model_type": "mistral", "sliding_window": 4096})
    assert mistral.all_sliding and mistral.sliding_window == 4096
    assert parse_config({**BASE, "sliding_window": None}).sliding_window is None


def test_dynamic_and_longrope_frequencies_follow_the_served_length():
    dyn = parse_config({**BASE, "rope_scaling": {"rope_type": "dynamic", "factor": 4.0}})
    inside, _ = inv_freq_and_scale(dyn, max_len=2048)
    beyond, _ = inv_freq_and_scale(dyn, max_len=8192)
    default = 1.0 / (10000.0 ** (torch.arange(0, 32, 2).float() / 32))
    assert torch.allclose(inside, default)  # transformers keeps the default frequencies up to max_position_embeddings
    base = 10000.0 * ((4.0 * 8192 / 2048) - 3.0) ** (32 / 30)
    assert torch.allclose(beyond, 1.0 / (base ** (torch.arange(0, 32, 2).float() / 32)))
    lr = {"type": "longrope", "short_factor": [1.0] * 16, "long_factor": [2.0] * 16}
    phi = parse_config({**BASE, "original_max_position_embeddings": 512, "rope_scaling": lr})
    short, s_scale = inv_freq_and_scale(phi, max_len=512)
    long, l_scale = inv_freq_and_scale(phi, max_len=2048)
    assert torch.allclose(short, default) and torch.allclose(long, default / 2)
    assert s_scale == l_scale == pytest.approx(math.sqrt(1 + math.log(2048 / 512) / math.log(512)))
