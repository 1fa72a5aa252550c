"""Block allocator of the paged KV cache, with prefix reuse.

The cache is cut into blocks of ``block_size`` token slots. A sequence holds a list of blocks
(its block table). A block that is full of known tokens gets a chain hash (hash of the previous
block's hash and this block's token ids), so a later prompt that starts with the same tokens
reuses the block instead of recomputing it. Freed hashed blocks stay cached until the space is
needed (least recently freed goes first). Block 0 is never handed out: padded rows of a batch
write there.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict, deque
from typing import Sequence

import numpy as np

NULL_BLOCK = 0


def block_hash(parent: bytes | None, tokens: Sequence[int]) -> bytes:
    """Chain hash of one full block of tokens."""
    h = hashlib.blake2b(digest_size=16)
    h.update(parent or b"\0" * 16)
    h.update(np.asarray(tokens, dtype=np.int64).tobytes())
    return h.digest()


class BlockManager:
    """Reference-counted blocks, a free list and an LRU of cached (hashed, unreferenced) blocks."""

    def __init__(self, num_blocks: int, block_size: int, enable_prefix_caching: bool = True) -> None:
        if num_blocks < 2:
            raise ValueError("the KV cache needs at least two blocks")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self.ref = [0] * num_blocks
        self.ref[NULL_BLOCK] = 1
        self.hash_of: dict[int, bytes] = {}
        self.block_of: dict[bytes, int] = {}
        self.free: deque[int] = deque(range(1, num_blocks))
        self.cached: OrderedDict[int, None] = OrderedDict()
        self.used = 0

    @property
    def usable_blocks(self) -> int:
        """Blocks that sequences can hold (all but the null block)."""
        return self.num_blocks - 1

    def num_free(self) -> int:
        """Blocks that can be handed out now (free plus evictable cached ones)."""
        return len(self.free) + len(self.cached)

    def prefix_hashes(self, tokens: Sequence[int], max_blocks: int) -> list[bytes]:
        """Chain hashes of the first full blocks of tokens (at most max_blocks)."""
        out: list[bytes] = []
        parent: bytes | None = None
        bs = self.block_size
        for i in range(min(max_blocks, len(tokens) // bs)):
            parent = block_hash(parent, tokens[i * bs : (i + 1) * bs])
            out.append(parent)
        return out

    def match_prefix(self, hashes: Sequence[bytes]) -> list[int]:
        """Blocks that already hold the leading hashed blocks; takes a reference on each."""
        if not self.enable_prefix_caching:
            return []
        blocks: list[int] = []
        for h in hashes:
            b = self.block_of.get(h)
            if b is None:
                break
            blocks.append(b)
        for b in blocks:
            self._take(b)
        return blocks

    def count_prefix(self, hashes: Sequence[bytes]) -> tuple[int, int]:
        """(matching blocks, of which unreferenced ones) without taking them."""
        if not self.enable_prefix_caching:
            return 0, 0
        n = idle = 0
        for h in hashes:
            b = self.block_of.get(h)
            if b is None:
                break
            n += 1
            if self.ref[b] == 0:
                idle += 1
        return n, idle

    def _take(self, b: int) -> None:
        if self.ref[b] == 0:
            self.cached.pop(b, None)
            self.used += 1
        self.ref[b] += 1

    def allocate(self, n: int) -> list[int] | None:
        """n fresh blocks, or None when there are not enough (nothing is taken then)."""
        if n > self.num_free():
            return None
        out: list[int] = []
        for _ in range(n):
            if self.free:
                b = self.free.popleft()
            else:
                b, _ = self.cached.popitem(last=False)
                h = self.hash_of.pop(b)
                if self.block_of.get(h) == b:
                    del self.block_of[h]
            self.ref[b] = 1
            self.used += 1
            out.append(b)
        return out

    def release(self, blocks: Sequence[int]) -> None:
        """Drops one reference on each block; unreferenced hashed blocks stay cached."""
        for b in blocks:
            self.ref[b] -= 1
            if self.ref[b] == 0:
                self.used -= 1
                if b in self.hash_of:
                    self.cached[b] = None
                else:
                    self.free.append(b)

    def register(self, block: int, h: bytes) -> None:
        """Marks a full block as holding the tokens that hash to h."""
        if not self.enable_prefix_caching or block in self.hash_of:
            return
        if h in self.block_of:
            return  # another block holds the same tokens; keep the first
        self.hash_of[block] = h
        self.block_of[h] = block

    def reset_prefix_cache(self) -> None:
        """Forgets every cached block (used ones keep their data but lose their hash)."""
        for b in list(self.cached):
            self.free.append(b)
        self.cached.clear()
        self.hash_of.clear()
        self.block_of.clear()
