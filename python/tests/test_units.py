"""Config parsing, rotary tables, CRC-32C and the block allocator."""

from __future__ import annotations

import json
import math
import random

import pytest
import torch

from thaw_engine.config import ConfigError, parse_config
from thaw_engine.crc32c import crc32c, crc32c_numpy
from thaw_engine.kv_cache import BlockManager
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
    bm = BlockManager(num_blocks=5, block_size=4)
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
