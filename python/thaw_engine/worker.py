"""The worker's state: one device, the models loaded on it (by name), the KV pool they share, the
step loop that serves them, and the device allocations exported to the agent."""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch

from thaw.checkpoint.v1 import checkpoint_pb2

from .config import ModelConfig, parse_config
from .engine import Engine, EngineConfig, Event, Sink
from .kv_cache import KvPool, PagePool, PoolFull
from .loop import StepLoop
from .model import DecoderModel
from .runner import DecodeItem, ModelRunner, PrefillItem
from .sampling import SampleRow, SamplingOptions, sample
from .weights import TORCH_DTYPES, LoadedWeights, LoadError, load_from_device, load_from_folder, load_from_host

log = logging.getLogger("thaw_engine.worker")

_DTYPES = {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16, "half": torch.float16, "float32": torch.float32, "fp32": torch.float32, "float": torch.float32}

Dispatch = Callable[[list[tuple[Sink, Event]]], None]


@dataclass
class WorkerOptions:
    """Command-line settings of the worker."""

    device: str = "cpu"
    block_size: int = 16  # tokens per KV block at most (fewer when a page holds fewer of a model's tokens)
    max_num_seqs: int = 64  # per model
    max_total_seqs: int = 256  # over all models
    max_num_batched_tokens: int = 8192  # prompt tokens prefilled in one step at most
    prefill_chunk_tokens: int = 256  # prompt tokens a step while the model has decoding sequences (0 = max_num_batched_tokens)
    cuda_graphs: bool = True
    graph_max_batch: int = 64
    graph_max_context: int = 8192
    graph_capture_at_load: int = 0  # decode graphs captured inside LoadWeights (smallest first; -1 = all)
    load_warm: str = "auto"  # per-model warm-up in LoadWeights: full | light | none | auto (none once kernels are warm)
    enable_prefix_caching: bool = True
    verify_checksums: bool = True
    gpu_memory_utilization: float = 0.9
    kv_pool_bytes: int = 0  # KV memory shared by all models; 0 = CUDA min(20 GiB, 1/4 of the device), CPU cpu_kv_pool_bytes
    kv_page_bytes: int = 0  # one pool page = one KV block of any model; 0 = CUDA 2 MiB, CPU 64 KiB
    cpu_kv_pool_bytes: int = 512 << 20
    kv_cache_bytes: int = 0  # a model's KV floor when LoadWeights gives none; 0 = one max_model_len sequence, at most 1/4 of the pool
    activation_reserve_bytes: int = 3 << 30  # CUDA: device memory kept for activations and graphs, outside the weights budget
    warm_model: bool = True  # CUDA: run a synthetic one-layer model at start to load kernels


@dataclass
class LoadRequest:
    """LoadWeights, decoded."""

    index: checkpoint_pb2.CheckpointIndex
    config_json: str
    location: str  # "host" | "device" | "folder"
    host_path: str = ""
    host_offset: int = 0
    host_length: int = 0
    allocation_id: str = ""
    folder: str = ""
    chunk_offsets: list[int] = field(default_factory=list)
    dtype: str = ""
    max_model_len: int = 0
    kv_cache_bytes: int = 0  # the model's KV floor; 0 = the worker's default
    model: str = ""  # name inside the worker; empty = "<model_id>@<revision>"


@dataclass
class LoadedModel:
    """A model ready to serve."""

    name: str
    ref: checkpoint_pb2.CheckpointRef
    cfg: ModelConfig
    weights: LoadedWeights
    model: DecoderModel
    runner: ModelRunner
    engine: Engine
    dtype: torch.dtype
    seconds: float
    allocation_id: str = ""

    @property
    def floor_blocks(self) -> int:
        return self.engine.blocks.floor

    @property
    def weight_bytes(self) -> int:
        return self.weights.nbytes + self.model.converted_bytes


def model_name(ref: checkpoint_pb2.CheckpointRef) -> str:
    """The default name of a model inside the worker: "<model_id>@<revision>" (the agent's model key)."""
    return f"{ref.model_id or 'model'}@{ref.revision or 'main'}"


class Worker:
    """Device, KV pool, step loop, allocations and the models loaded on them, by name.

    Models are added next to each other (LoadWeights) and removed one by one (Unload); they share the
    device, the CUDA context, the kernels warmed at start, one KV pool and one step loop thread. The
    loop thread starts with :meth:`start`; without it, tests drive steps themselves
    (``engine.generate``, ``worker.loop.run_until_idle``)."""

    def __init__(self, options: WorkerOptions, dispatch: Optional[Dispatch] = None) -> None:
        self.options = options
        self.device = torch.device(options.device)
        self.dispatch = dispatch  # how a step's events reach their sinks (None: called in the loop thread)
        self.allocations: dict[str, Any] = {}
        self.allocation_model: dict[str, str] = {}  # allocation id -> the model it was made for
        self.models: dict[str, LoadedModel] = {}
        self.loop = StepLoop(options.max_total_seqs)
        self._lock = threading.Lock()  # loads and unloads, one at a time
        self.kernels_warm = False  # the synthetic model ran at start (warm_up)
        self._kv: Optional[KvPool] = None
        self._pages: Optional[PagePool] = None
        self._graph_pool: Any = None
        self._graph_stream: Any = None

    @property
    def loaded(self) -> Optional[LoadedModel]:
        """The first loaded model (single-model callers)."""
        return next(iter(self.models.values()), None)

    def get(self, name: str) -> LoadedModel:
        """The model of that name; an empty name means the only one loaded."""
        models = self.models
        if not name:
            if not models:
                raise LoadError("no model is loaded", "FAILED_PRECONDITION")
            if len(models) > 1:
                raise LoadError(f"{len(models)} models are loaded ({', '.join(sorted(models))}): name one", "INVALID_ARGUMENT")
            return next(iter(models.values()))
        lm = models.get(name)
        if lm is None:
            raise LoadError(f"no model {name!r} is loaded", "NOT_FOUND")
        return lm

    # ---- start -------------------------------------------------------------------------------

    def start(self) -> None:
        """Starts the step loop thread (requests are served from then on)."""
        self.loop.start()

    def warm_up(self) -> dict[str, Any]:
        """Brings the device up (CUDA context, cuBLAS, the KV pool) so the first load pays none of it.
        Kernels are warmed in the step loop's thread, where the models will run."""
        t0 = time.perf_counter()
        info: dict[str, Any] = {"device": str(self.device), "torch": torch.__version__}
        if self.device.type == "cuda":
            if not torch.cuda.is_available():
                raise RuntimeError("CUDA was asked for but torch sees no CUDA device")
            torch.cuda.set_device(self.device)
            self.kv_pool()
            self.loop.call(self._warm_kernels)
            torch.cuda.synchronize(self.device)
            info["gpu"] = torch.cuda.get_device_name(self.device)
        else:
            self.kv_pool()
            self.loop.call(lambda: (torch.randn(64, 64) @ torch.randn(64, 64)).sum().item())
        kv = self.kv_pool()[0]
        info["kv_pool_bytes"] = kv.nbytes
        info["kv_page_bytes"] = kv.page_bytes
        info["warm_up_seconds"] = round(time.perf_counter() - t0, 3)
        return info

    def _warm_kernels(self) -> None:
        torch.cuda.set_device(self.device)
        for dt in (torch.bfloat16, torch.float16, torch.float32):
            a = torch.randn(64, 64, device=self.device, dtype=dt)
            (a @ a).sum().item()
        if self.options.warm_model:
            self._warm_synthetic()
            self.kernels_warm = True

    @torch.no_grad()
    def _warm_synthetic(self) -> None:
        """Runs a one-layer bf16 model of Llama-3-8B's widths through prefill, decode and sampling on
        the KV pool, so that the kernels a real model needs are loaded (CUDA loads them lazily)
        before any model is assigned. Freed afterwards."""
        cfg = parse_config({
            "architectures": ["LlamaForCausalLM"], "vocab_size": 32768, "hidden_size": 4096, "intermediate_size": 14336,
            "num_hidden_layers": 1, "num_attention_heads": 32, "num_key_value_heads": 8, "max_position_embeddings": 2048,
        })
        dev, dt = self.device, torch.bfloat16
        h, i, kv = cfg.hidden_size, cfg.intermediate_size, cfg.num_kv_heads * cfg.head_dim
        w = {
            "model.embed_tokens.weight": (cfg.vocab_size, h), "lm_head.weight": (cfg.vocab_size, h), "model.norm.weight": (h,),
            "model.layers.0.input_layernorm.weight": (h,), "model.layers.0.post_attention_layernorm.weight": (h,),
            "model.layers.0.self_attn.q_proj.weight": (h, h), "model.layers.0.self_attn.k_proj.weight": (kv, h),
            "model.layers.0.self_attn.v_proj.weight": (kv, h), "model.layers.0.self_attn.o_proj.weight": (h, h),
            "model.layers.0.mlp.gate_proj.weight": (i, h), "model.layers.0.mlp.up_proj.weight": (i, h),
            "model.layers.0.mlp.down_proj.weight": (h, i),
        }
        tensors = {k: torch.randn(s, device=dev, dtype=dt) * 0.02 for k, s in w.items()}
        weights = LoadedWeights(tensors, sum(t.numel() * 2 for t in tensors.values()), "synthetic")
        lm = self._build("warm-up", checkpoint_pb2.CheckpointRef(), cfg, weights, dt, 2048, 0, "", time.perf_counter(), warm="full", graphs=False)
        self.loop.remove(lm.engine)
        lm.runner.release()
        weights.release()
        del lm
        torch.cuda.synchronize(dev)
        torch.cuda.empty_cache()

    # ---- the KV pool ---------------------------------------------------------------------------

    def kv_pool(self) -> tuple[KvPool, PagePool]:
        """The pool's bytes and its pages, allocated at the first call (start or first load), kept for
        the worker's life: it never moves, so CUDA graphs keep valid addresses."""
        if self._kv is None or self._pages is None:
            page = self.options.kv_page_bytes or ((2 << 20) if self.device.type == "cuda" else (64 << 10))
            size = self.options.kv_pool_bytes
            if not size:
                if self.device.type == "cuda":
                    total = torch.cuda.get_device_properties(self.device).total_memory
                    size = min(20 << 30, total // 4)
                else:
                    size = self.options.cpu_kv_pool_bytes
            try:
                kv = KvPool(size // page, page, self.device)
            except PoolFull as e:
                raise LoadError(f"--kv-pool-bytes {size} / --kv-page-bytes {page}: {e}", "FAILED_PRECONDITION") from e
            self._kv, self._pages = kv, PagePool(kv.num_pages, kv.scrub)
            log.info("KV pool: %d pages of %d bytes (%.2f GiB) on %s", kv.num_pages, page, kv.nbytes / (1 << 30), self.device)
        return self._kv, self._pages

    def _graph_resources(self) -> tuple[Any, Any]:
        """One graph memory pool and one capture stream for every model's decode graphs."""
        if self._graph_pool is None:
            self._graph_pool = torch.cuda.graph_pool_handle()
            self._graph_stream = torch.cuda.Stream(self.device)
        return self._graph_pool, self._graph_stream

    # ---- allocations -------------------------------------------------------------------------

    def allocate(self, nbytes: int, model: str = "") -> Any:
        """A device buffer of at least nbytes with an IPC handle (CUDA only)."""
        if self.device.type != "cuda":
            raise LoadError("AllocateWeights needs a CUDA device; this worker runs on CPU (use host memory)", "FAILED_PRECONDITION")
        if nbytes <= 0:
            raise LoadError("AllocateWeights needs a positive size")
        from .cuda import CudaError, DeviceAllocation

        free, _ = torch.cuda.mem_get_info(self.device)
        if nbytes > free:
            raise LoadError(f"{nbytes} bytes asked for, {free} free on {self.device}", "RESOURCE_EXHAUSTED")
        try:
            alloc = DeviceAllocation(uuid.uuid4().hex, nbytes, self.device)
        except CudaError as e:
            raise LoadError(str(e), "RESOURCE_EXHAUSTED" if "memory" in str(e) else "INTERNAL") from e
        self.allocations[alloc.allocation_id] = alloc
        self.allocation_model[alloc.allocation_id] = model
        log.info("allocated %d bytes on %s as %s", alloc.nbytes, self.device, alloc.allocation_id)
        return alloc

    # ---- load --------------------------------------------------------------------------------

    def _weights(self, req: LoadRequest) -> tuple[LoadedWeights, checkpoint_pb2.CheckpointIndex, str]:
        """The weights the request points at, the index (read from the folder when not given) and the
        allocation they sit in."""
        index = req.index
        if req.location == "host":
            return load_from_host(index, req.host_path, req.host_offset, req.host_length, req.chunk_offsets, self.device), index, ""
        if req.location == "device":
            alloc = self.allocations.get(req.allocation_id)
            if alloc is None:
                raise LoadError(f"no allocation {req.allocation_id!r} (AllocateWeights first)", "NOT_FOUND")
            return load_from_device(index, alloc, req.chunk_offsets), index, alloc.allocation_id
        if req.location == "folder":
            if not req.folder:
                raise LoadError("the checkpoint folder path is empty")
            weights = load_from_folder(index if len(index.chunks) else None, req.folder, self.device, self.options.verify_checksums)
            if not len(index.chunks):
                from .weights import read_index

                index = read_index(req.folder)
            return weights, index, ""
        raise LoadError("LoadWeights needs a memory location (host, device or folder)")

    def load(self, req: LoadRequest) -> LoadedModel:
        """Builds a model on the weights the request points at, next to the models already loaded,
        and starts serving it (ALREADY_EXISTS for a loaded name; RESOURCE_EXHAUSTED when its KV floor
        does not fit beside the others')."""
        with self._lock:
            t0 = time.perf_counter()
            if req.model and req.model in self.models:
                raise LoadError(f"a model named {req.model!r} is already loaded", "ALREADY_EXISTS")
            cfg = parse_config(req.config_json)
            weights, index, alloc_id = self._weights(req)
            try:
                name = req.model or model_name(index.ref)
                if name in self.models:
                    raise LoadError(f"a model named {name!r} is already loaded", "ALREADY_EXISTS")
                dtype = self._compute_dtype(req, index)
                lm = self._build(name, index.ref, cfg, weights, dtype, req.max_model_len, req.kv_cache_bytes, alloc_id, t0)
            except BaseException:
                weights.release()
                raise
            self.models[name] = lm
            return lm

    def add_model(
        self, name: str, config: Any, tensors: dict[str, torch.Tensor], dtype: torch.dtype, max_model_len: int = 0, kv_floor_bytes: int = 0
    ) -> LoadedModel:
        """Serves a model from tensors already on the device (benchmarks, tests): LoadWeights without
        the memory descriptor."""
        with self._lock:
            if name in self.models:
                raise LoadError(f"a model named {name!r} is already loaded", "ALREADY_EXISTS")
            cfg = parse_config(config)
            weights = LoadedWeights(dict(tensors), sum(t.numel() * t.element_size() for t in tensors.values()), "tensors")
            ref = checkpoint_pb2.CheckpointRef(model_id=name)
            lm = self._build(name, ref, cfg, weights, dtype, max_model_len, kv_floor_bytes, "", time.perf_counter())
            self.models[name] = lm
            return lm

    def _build(
        self,
        name: str,
        ref: checkpoint_pb2.CheckpointRef,
        cfg: ModelConfig,
        weights: LoadedWeights,
        dtype: torch.dtype,
        max_model_len: int,
        floor_bytes: int,
        alloc_id: str,
        t0: float,
        warm: str = "",
        graphs: Optional[bool] = None,
    ) -> LoadedModel:
        """Model, runner on the pool's views, engine; joins the step loop (warm-up and graph plan run
        in the loop's thread, where CUDA per-thread state lives)."""
        marks = [("weights", time.perf_counter())]
        kv, pages = self.kv_pool()
        bt = kv.block_tokens(cfg.num_layers, cfg.num_kv_heads, cfg.head_dim, dtype, self.options.block_size)
        if bt < 1:
            need = kv.token_bytes(cfg.num_layers, cfg.num_kv_heads, cfg.head_dim, dtype)
            raise LoadError(
                f"one token of {name}'s KV cache takes {need} bytes, more than a KV page ({kv.page_bytes} bytes): "
                "start the worker with a larger --kv-page-bytes",
                "RESOURCE_EXHAUSTED",
            )
        limit = max_model_len or cfg.max_position_embeddings
        max_len = min(limit, pages.usable * bt)
        if max_len < 2:
            raise LoadError("the KV pool is too small for even one token", "RESOURCE_EXHAUSTED")
        floor = self._floor_pages(floor_bytes, max_len, bt, pages.usable, kv.page_bytes)
        if floor + pages.floors() > pages.usable:
            raise LoadError(
                f"{name}'s KV floor of {floor} pages ({floor * kv.page_bytes} bytes) does not fit: the pool has "
                f"{pages.usable} pages and the loaded models' floors take {pages.floors()}",
                "RESOURCE_EXHAUSTED",
            )
        model = DecoderModel(cfg, weights.tensors, dtype, self.device, max_len)
        if model.converted_bytes:
            log.warning("weights of %s converted to %s: %d bytes copied", name, dtype, model.converted_bytes)
        use_graphs = self.device.type == "cuda" and self.options.cuda_graphs if graphs is None else graphs
        pool, stream = self._graph_resources() if use_graphs else (None, None)
        runner = ModelRunner(model, kv.views(cfg.num_layers, cfg.num_kv_heads, cfg.head_dim, dtype, bt), kv.num_pages, bt, max_len, pool, stream)
        engine = Engine(
            runner,
            EngineConfig(
                self.options.max_num_seqs, self.options.max_num_batched_tokens, self.options.enable_prefix_caching, self.options.prefill_chunk_tokens
            ),
            cfg.vocab_size,
            cfg.eos_token_ids,
            pages=pages,
            floor=floor,
            lock=self.loop.cv,
            dispatch=self.dispatch,
            name=name,
        )
        marks.append(("model", time.perf_counter()))
        if not warm:
            warm = self.options.load_warm
        if warm == "auto":
            # the synthetic model at start loaded the kernels in the loop thread; what is left costs
            # the first request less than a warm-up pass costs LoadWeights
            warm = "none" if self.kernels_warm else "light" if self.device.type != "cuda" else "full"

        def join() -> None:
            """In the loop thread: joins the pool and the loop, warms up, plans the decode graphs
            (captured later: on first use of a shape, or while no model has work)."""
            try:
                self.loop.add(engine)
            except PoolFull as e:
                raise LoadError(str(e), "RESOURCE_EXHAUSTED") from e
            try:
                if warm != "none":
                    self._warm(engine, light=warm == "light")
                    marks.append((f"warm-up ({warm})", time.perf_counter()))
                if use_graphs:
                    planned = runner.plan_graphs(
                        min(self.options.graph_max_batch, self.options.max_num_seqs), max_context=self.options.graph_max_context
                    )
                    if self.options.graph_capture_at_load:
                        runner.capture_graphs(0, count=self.options.graph_capture_at_load)
                    marks.append((f"graphs {len(runner.graphs)} of {planned}", time.perf_counter()))
            except BaseException:
                self.loop.remove(engine)
                raise

        self.loop.call(join)
        seconds = time.perf_counter() - t0
        prev, parts = t0, []
        for step, t in marks:
            parts.append(f"{step} {t - prev:.3f} s")
            prev = t
        log.info(
            "loaded %s (%s, %s, %s) from %s in %.3f s (%s); blocks of %d tokens, floor %d pages, max_model_len %d; %d models loaded",
            name, cfg.architecture, dtype, self.device, weights.source, seconds, ", ".join(parts), bt, floor, max_len, len(self.models) + 1,
        )
        return LoadedModel(name, ref, cfg, weights, model, runner, engine, dtype, seconds, alloc_id)

    def _compute_dtype(self, req: LoadRequest, index: checkpoint_pb2.CheckpointIndex) -> torch.dtype:
        if req.dtype:
            dt = _DTYPES.get(req.dtype.lower())
            if dt is None:
                raise LoadError(f"dtype {req.dtype!r} is not one of bfloat16, float16, float32")
        else:
            dt = torch.float32
            for t in index.tensors:
                if t.name == "model.embed_tokens.weight" and t.dtype in TORCH_DTYPES:
                    dt = TORCH_DTYPES[t.dtype]
                    break
            if dt not in (torch.bfloat16, torch.float16, torch.float32):
                dt = torch.float32
        if self.device.type == "cpu" and dt == torch.float16:
            log.warning("float16 matmul is not available on this CPU build: computing in float32")
            dt = torch.float32
        return dt

    def _floor_pages(self, floor_bytes: int, max_len: int, block_tokens: int, usable: int, page_bytes: int) -> int:
        """Pages guaranteed to a model: as asked, else the worker's default, else one max_model_len
        sequence but at most a quarter of the pool."""
        asked = floor_bytes or self.options.kv_cache_bytes
        if asked:
            return -(-asked // page_bytes)
        return min(-(-max_len // block_tokens), usable // 4)

    @torch.no_grad()
    def _warm(self, engine: Engine, light: bool = False) -> None:
        """Dummy prefills of a few lengths, an eager decode and every sampling path, so that no
        kernel loads (and no per-thread handle is made) on the first request. KV written here lands
        in blocks that are released unhashed. ``light``: one short prefill only (for when the
        synthetic model at start already loaded the kernels; what is left is per-thread state)."""
        runner = engine.runner
        bs = runner.block_size
        # CPU kernels need no warming beyond one pass; CUDA loads kernels lazily, per shape class
        sizes = (bs, 128, 1024) if self.device.type == "cuda" and not light else (bs,)
        lengths = sorted({min(n, runner.max_model_len - 1) for n in sizes})
        blocks = engine.blocks.allocate(-(-max(lengths[-1], bs + 1) // bs))
        if blocks is None:
            blocks = [0]
            lengths = [min(bs, runner.max_model_len - 1)]
        try:
            outs = [runner.prefill([PrefillItem([0] * n, 0, blocks)]) for n in lengths]
            outs.append(runner.prefill([PrefillItem([0], bs - 1, blocks)]))  # the cached-prefix (masked) path
            if len(blocks) > 1:
                graphs, runner.graphs = runner.graphs, []
                schedule, runner._schedule = runner._schedule, None
                try:
                    outs.append(runner.decode([DecodeItem(0, bs, blocks), DecodeItem(0, 3, blocks)]))
                finally:
                    runner.graphs, runner._schedule = graphs, schedule
                if graphs:
                    outs.append(runner.decode([DecodeItem(0, bs, blocks)]).clone())
            logits = torch.cat(outs[-2:])[:2]
            rows = [
                SampleRow(SamplingOptions(temperature=0.0, logprobs=True, top_logprobs=2, min_tokens=2, eos_token_ids=frozenset({1})), 0, 0, [0], []),
                SampleRow(SamplingOptions(top_p=0.9, top_k=5, min_p=0.01, repetition_penalty=1.1, presence_penalty=0.1), 1, 0, [0], [0]),
            ]
            sample(logits, rows)
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
        finally:
            if blocks != [0]:
                engine.blocks.release(blocks)

    # ---- unload -------------------------------------------------------------------------------

    def unload(self, name: str = "") -> int:
        """Drops one model: its sequences end (FINISH_REASON_ABORT), its KV pages are free at once for
        the others, its weights and the device allocations made for it are freed. An empty name drops
        every model and allocation. Bytes released (0 when nothing had that name)."""
        with self._lock:
            freed = 0
            names = [name] if name else list(self.models)
            alloc_ids = {a for a, m in self.allocation_model.items() if not name or m == name}
            dropped = False  # (no gc.collect(): nothing of a model is in a reference cycle)
            for n in names:
                lm = self.models.pop(n, None)
                if lm is None:
                    continue
                dropped = True
                self.loop.remove(lm.engine)
                freed += lm.model.converted_bytes
                if lm.weights.source == "device":
                    if lm.allocation_id:
                        alloc_ids.add(lm.allocation_id)
                else:
                    freed += lm.weights.nbytes
                lm.runner.release()
                lm.weights.release()
                del lm
                log.info("unloaded %s", n)
            for aid in alloc_ids:
                alloc = self.allocations.pop(aid, None)
                self.allocation_model.pop(aid, None)
                if alloc is not None:
                    freed += alloc.nbytes
                    alloc.free()
            if self.device.type == "cuda" and (dropped or alloc_ids):
                torch.cuda.empty_cache()
            return freed

    def shutdown(self) -> None:
        """Unloads everything and stops the step loop (SIGTERM)."""
        try:
            self.unload()
        except Exception:
            log.exception("unload at shutdown failed")
        self.loop.stop()

    # ---- statistics -------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """GetStats' figures: the device, the KV pool, totals and one entry per model."""
        out: dict[str, Any] = {"device": str(self.device), "pid": os.getpid()}
        models = list(self.models.values())
        per_model = []
        for lm in models:
            st: dict[str, Any] = dict(lm.engine.stats())
            st.update(
                model=lm.name,
                ref=lm.ref,
                weight_bytes=lm.weight_bytes,
                block_size=lm.runner.block_size,
                max_model_len=lm.runner.max_model_len,
                prompt_tokens=lm.engine.prompt_tokens_total,
                cached_tokens=lm.engine.cached_tokens_total,
            )
            per_model.append(st)
        out["models"] = per_model
        for key in ("running", "waiting", "kv_blocks_used", "generated_tokens"):
            out[key] = sum(int(m[key]) for m in per_model)
        prompt = sum(m["prompt_tokens"] for m in per_model)
        out["prefix_hit_rate"] = sum(m["cached_tokens"] for m in per_model) / prompt if prompt else 0.0
        if models:
            out["ref"] = models[0].ref
        kv, pages = (self._kv, self._pages)
        out["kv_pool_bytes"] = kv.nbytes if kv is not None else 0
        out["kv_page_bytes"] = kv.page_bytes if kv is not None else 0
        out["kv_blocks_total"] = pages.usable if pages is not None else 0
        out["weights_budget_bytes"] = 0
        if self.device.type == "cuda":
            raw = sum(a.nbytes for a in self.allocations.values())
            total = torch.cuda.get_device_properties(self.device).total_memory
            out["device_memory_used"] = torch.cuda.memory_reserved(self.device) + raw
            out["device_memory_total"] = total
            budget = int(total * self.options.gpu_memory_utilization) - out["kv_pool_bytes"] - self.options.activation_reserve_bytes
            out["weights_budget_bytes"] = max(0, budget)
        else:
            out["device_memory_used"] = out["kv_pool_bytes"] + sum(lm.model.converted_bytes for lm in models)
            out["device_memory_total"] = 0
        return out
