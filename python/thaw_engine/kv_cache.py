"""The KV cache: one pool of bytes per worker, cut into pages, shared by every loaded model.

One page holds one KV block of any model: ``block_tokens`` tokens of keys and values of all its
layers. Inside a page, layer l's keys (kind 0) and values (kind 1) sit in region ``2*l + kind``,
each region laid out [kv_heads, block_tokens, head_dim]. So for one model, one (layer, kind) is a
strided view [kv_heads, pages, block_tokens, head_dim] of the pool: attention gathers a sequence's
pages with one ``index_select`` along dim 1 straight into the [kv_heads, tokens, head_dim] layout
the batched matmuls read (no copy after the gather), and every layer shares one page table. The
pool is allocated once and never moves, so CUDA graphs captured on these views stay valid.

Pages are accounted for by a :class:`PagePool` (free list, one LRU of cached prefix pages of all
models, each model's floor) and handed to each model's :class:`BlockManager` (its references and
its prefix cache). A slot is ``page * block_tokens + offset``. Page 0 is never handed out: padded
rows of a batch write there.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict, deque
from typing import Callable, Optional, Sequence

import numpy as np
import torch

NULL_BLOCK = 0


class PoolFull(ValueError):
    """A model whose floor (or whose single token) does not fit the pool."""


def block_hash(parent: bytes | None, tokens: Sequence[int]) -> bytes:
    """Chain hash of one full block of tokens."""
    h = hashlib.blake2b(digest_size=16)
    h.update(parent or b"\0" * 16)
    h.update(np.asarray(tokens, dtype=np.int64).tobytes())
    return h.digest()


class KvPool:
    """The pool's bytes and the views each model's layers read and write."""

    def __init__(self, num_pages: int, page_bytes: int, device: torch.device) -> None:
        if num_pages < 2:
            raise PoolFull(f"a KV pool needs at least two pages, got {num_pages}")
        if page_bytes <= 0 or page_bytes % 256:
            raise PoolFull(f"the KV page size must be a positive multiple of 256 bytes, got {page_bytes}")
        self.num_pages = num_pages
        self.page_bytes = page_bytes
        self.device = device
        self.data = torch.zeros(num_pages * page_bytes, dtype=torch.uint8, device=device)

    @property
    def nbytes(self) -> int:
        return self.num_pages * self.page_bytes

    def token_bytes(self, num_layers: int, num_kv_heads: int, head_dim: int, dtype: torch.dtype) -> int:
        """KV bytes of one token over all layers."""
        return 2 * num_layers * num_kv_heads * head_dim * torch.empty((), dtype=dtype).element_size()

    def block_tokens(self, num_layers: int, num_kv_heads: int, head_dim: int, dtype: torch.dtype, block_size: int) -> int:
        """Tokens per block (page) of a model: at most block_size, as many as one page holds; 0 if not one."""
        return min(block_size, self.page_bytes // self.token_bytes(num_layers, num_kv_heads, head_dim, dtype))

    def views(
        self, num_layers: int, num_kv_heads: int, head_dim: int, dtype: torch.dtype, block_tokens: int
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per layer (keys, values), each [kv_heads, pages, block_tokens, head_dim] on the pool."""
        elsize = torch.empty((), dtype=dtype).element_size()
        region = num_kv_heads * block_tokens * head_dim
        page = self.page_bytes // elsize
        if block_tokens < 1 or 2 * num_layers * region > page:
            raise PoolFull(f"{block_tokens} tokens of this model do not fit a {self.page_bytes}-byte page")
        typed = self.data.view(dtype)
        shape = (num_kv_heads, self.num_pages, block_tokens, head_dim)
        stride = (block_tokens * head_dim, page, head_dim, 1)
        return [
            (typed.as_strided(shape, stride, (2 * layer) * region), typed.as_strided(shape, stride, (2 * layer + 1) * region))
            for layer in range(num_layers)
        ]

    def scrub(self, pages: Sequence[int]) -> None:
        """Zeroes pages (handed to a model of another dtype: its bytes could read as NaN there)."""
        if pages:
            idx = torch.tensor(list(pages), dtype=torch.int64).to(self.device, non_blocking=True)
            self.data.view(self.num_pages, self.page_bytes).index_fill_(0, idx, 0)


class PagePool:
    """Which pages are free, cached or held, shared by every model's :class:`BlockManager`.

    A model takes a free page first; else the least recently freed cached prefix page of any model
    (so an idle model's prefix cache shrinks first); else, when the model holds fewer pages than its
    floor, the latest sequence of the model furthest above its own floor is preempted; else nothing
    (the model's engine then preempts its own latest sequence). Floors are guarantees, not
    reservations: a busy model grows into pages an idle one does not use."""

    def __init__(self, num_pages: int, scrub: Optional[Callable[[Sequence[int]], None]] = None) -> None:
        if num_pages < 2:
            raise PoolFull(f"a KV pool needs at least two pages, got {num_pages}")
        self.num_pages = num_pages
        self.free: deque[int] = deque(range(1, num_pages))
        self.cached: OrderedDict[int, BlockManager] = OrderedDict()  # least recently freed first
        self.tenants: list[BlockManager] = []
        self._tag: list[object] = [None] * num_pages  # dtype of the model that last held each page
        self._scrub = scrub
        self.reclaimed = 0  # cached pages taken from their model's prefix cache
        self.floor_preemptions = 0  # sequences preempted to give a model its floor

    @property
    def usable(self) -> int:
        """Pages sequences can hold (all but the null page)."""
        return self.num_pages - 1

    def available(self) -> int:
        """Pages that can be taken without preempting anything."""
        return len(self.free) + len(self.cached)

    def floors(self) -> int:
        return sum(t.floor for t in self.tenants)

    def held(self) -> int:
        return sum(t.used for t in self.tenants)

    def attach(self, tenant: BlockManager) -> None:
        if tenant.floor + self.floors() > self.usable:
            raise PoolFull(
                f"a KV floor of {tenant.floor} pages does not fit: the pool has {self.usable} pages and the loaded "
                f"models' floors take {self.floors()}"
            )
        self.tenants.append(tenant)

    def detach(self, tenant: BlockManager) -> None:
        """Forgets a model that holds no page; its cached pages become free."""
        if tenant.used:
            raise RuntimeError(f"a model still holding {tenant.used} KV pages cannot leave the pool")
        tenant.reset_prefix_cache()
        self.tenants.remove(tenant)

    def make_room(self, tenant: BlockManager, n: int) -> bool:
        """True when n pages can be taken now; a model below its floor preempts others above theirs
        (not when all they hold would still not make room: no preemption for nothing)."""
        while self.available() < n and tenant.used < tenant.floor:
            above = [t for t in self.tenants if t is not tenant and t.used > t.floor]
            if self.available() + sum(t.used for t in above) < n:
                break
            victim = max(above, key=lambda t: t.used - t.floor, default=None)
            if victim is None or victim.preempt is None or not victim.preempt():
                break
            self.floor_preemptions += 1
        return self.available() >= n

    def take(self, tenant: BlockManager, n: int) -> Optional[list[int]]:
        """n pages for tenant, or None (nothing taken then)."""
        if not self.make_room(tenant, n):
            return None
        pages: list[int] = []
        for _ in range(n):
            if self.free:
                p = self.free.popleft()
            else:
                p, owner = self.cached.popitem(last=False)
                owner.forget(p)
                self.reclaimed += 1
            pages.append(p)
        dirty = [p for p in pages if self._tag[p] not in (None, tenant.tag)]
        for p in pages:
            self._tag[p] = tenant.tag
        if dirty and self._scrub is not None:
            self._scrub(dirty)
        return pages

    def park(self, page: int, tenant: BlockManager) -> None:
        """A page only a prefix cache refers to: the first to go under pressure (LRU)."""
        self.cached[page] = tenant

    def unpark(self, page: int) -> None:
        del self.cached[page]

    def give_back(self, page: int) -> None:
        self.free.append(page)


class BlockManager:
    """One model's pages: reference counts (shared prefix blocks), chain hashes and its prefix cache.

    A block that is full of known tokens gets a chain hash (hash of the previous block's hash and
    this block's token ids), so a later prompt that starts with the same tokens reuses the block
    instead of recomputing it. Freed hashed blocks stay cached in the pool until it needs them."""

    def __init__(
        self,
        pool: PagePool,
        block_size: int,
        enable_prefix_caching: bool = True,
        floor: int = 0,
        tag: object = None,
        preempt: Optional[Callable[[], bool]] = None,
    ) -> None:
        self.pool = pool
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self.floor = floor  # pages other models never take this model below
        self.tag = tag
        self.preempt = preempt  # preempts this model's latest sequence; False when it has none
        self.ref: dict[int, int] = {}  # pages this model holds or has cached
        self.hash_of: dict[int, bytes] = {}
        self.block_of: dict[bytes, int] = {}
        self.used = 0  # pages held by sequences
        self.cached = 0  # pages held only by the prefix cache

    @property
    def usable_blocks(self) -> int:
        """Pages of the whole pool (what one model may hold at most)."""
        return self.pool.usable

    def num_free(self) -> int:
        """Pages that can be taken now without preempting (free plus every model's cached pages)."""
        return self.pool.available()

    def reserve(self, n: int) -> bool:
        """True when n pages can be allocated now (preempting other models below this one's floor)."""
        return self.pool.make_room(self, n)

    def others_hold(self) -> bool:
        """Whether other models hold pages (that they will give back)."""
        return self.pool.held() > self.used

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
            if self.ref[b] == 0:
                self.pool.unpark(b)
                self.cached -= 1
                self.used += 1
            self.ref[b] += 1
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

    def allocate(self, n: int) -> list[int] | None:
        """n fresh blocks, or None when there are not enough (nothing is taken then)."""
        pages = self.pool.take(self, n)
        if pages is None:
            return None
        for p in pages:
            self.ref[p] = 1
        self.used += n
        return pages

    def release(self, blocks: Sequence[int]) -> None:
        """Drops one reference on each block; unreferenced hashed blocks stay cached."""
        for b in blocks:
            self.ref[b] -= 1
            if self.ref[b] == 0:
                self.used -= 1
                if b in self.hash_of:
                    self.cached += 1
                    self.pool.park(b, self)
                else:
                    del self.ref[b]
                    self.pool.give_back(b)

    def forget(self, block: int) -> None:
        """The pool took this cached block for someone else."""
        h = self.hash_of.pop(block)
        if self.block_of.get(h) == block:
            del self.block_of[h]
        del self.ref[block]
        self.cached -= 1

    def register(self, block: int, h: bytes) -> None:
        """Marks a full block as holding the tokens that hash to h."""
        if not self.enable_prefix_caching or block in self.hash_of:
            return
        if h in self.block_of:
            return  # another block holds the same tokens; keep the first
        self.hash_of[block] = h
        self.block_of[h] = block

    def reset_prefix_cache(self) -> None:
        """Forgets every cached block (they become free; held ones keep their data but lose their hash)."""
        for b in [b for b, r in self.ref.items() if r == 0]:
            self.pool.unpark(b)
            del self.ref[b]
            self.pool.give_back(b)
        self.cached = 0
        self.hash_of.clear()
        self.block_of.clear()
