"""The worker's state: one device, the models loaded on it (by name), device allocations exported to the agent."""

from __future__ import annotations

import gc
import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Optional

import torch

from thaw.checkpoint.v1 import checkpoint_pb2

from .config import ModelConfig, parse_config
from .engine import Engine, EngineConfig
from .model import LlamaModel
from .runner import DecodeItem, ModelRunner, PrefillItem
from .sampling import SampleRow, SamplingOptions, sample
from .weights import TORCH_DTYPES, LoadedWeights, LoadError, load_from_device, load_from_folder, load_from_host

log = logging.getLogger("thaw_engine.worker")

_DTYPES = {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16, "half": torch.float16, "float32": torch.float32, "fp32": torch.float32, "float": torch.float32}


@dataclass
class WorkerOptions:
    """Command-line settings of the worker."""

    device: str = "cpu"
    block_size: int = 16
    max_num_seqs: int = 64
    max_num_batched_tokens: int = 8192
    cuda_graphs: bool = True
    graph_max_batch: int = 64
    graph_max_context: int = 8192
    graph_capture_at_load: int = 0  # decode graphs captured inside LoadWeights (smallest first; -1 = all)
    load_warm: str = "auto"  # per-model warm-up in LoadWeights: full | light | none | auto (none once kernels are warm)
    enable_prefix_caching: bool = True
    verify_checksums: bool = True
    gpu_memory_utilization: float = 0.9
    kv_cache_bytes: int = 0  # default when LoadWeights gives 0; 0 = automatic
    warm_model: bool = True  # CUDA: run a synthetic one-layer model at start to load kernels
    cpu_kv_cache_bytes: int = 512 << 20
    kv_pool_bytes: int = 0  # KV memory shared by all models; 0 = automatic
    kv_page_bytes: int = 0  # bytes of one pool page (one KV block of any model); 0 = automatic
    max_total_seqs: int = 256  # sequences batched at once, all models together


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
    kv_cache_bytes: int = 0
    model: str = ""  # name inside the worker; empty = "<model_id>@<revision>"


@dataclass
class LoadedModel:
    """A model ready to serve."""

    ref: checkpoint_pb2.CheckpointRef
    cfg: ModelConfig
    weights: LoadedWeights
    model: LlamaModel
    runner: ModelRunner
    engine: Engine
    dtype: torch.dtype
    seconds: float
    allocation_id: str = ""
    name: str = ""
    floor_blocks: int = 0


class Worker:
    """Device, allocations and the models loaded on it, by name."""

    def __init__(self, options: WorkerOptions) -> None:
        self.options = options
        self.device = torch.device(options.device)
        self.allocations: dict[str, Any] = {}
        self.allocation_model: dict[str, str] = {}  # allocation id -> the model it was made for
        self.models: dict[str, LoadedModel] = {}
        self._lock = threading.Lock()
        self.kernels_warm = False  # the synthetic model ran at start (warm_up)

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

    def warm_up(self) -> dict[str, Any]:
        """Brings the device up (CUDA context, cuBLAS) so the first load pays none of it."""
        t0 = time.perf_counter()
        info: dict[str, Any] = {"device": str(self.device), "torch": torch.__version__}
        if self.device.type == "cuda":
            if not torch.cuda.is_available():
                raise RuntimeError("CUDA was asked for but torch sees no CUDA device")
            torch.cuda.set_device(self.device)
            for dt in (torch.bfloat16, torch.float16, torch.float32):
                a = torch.randn(64, 64, device=self.device, dtype=dt)
                (a @ a).sum().item()
            if self.options.warm_model:
                self._warm_synthetic()
                self.kernels_warm = True
            torch.cuda.synchronize(self.device)
            info["gpu"] = torch.cuda.get_device_name(self.device)
        else:
            a = torch.randn(64, 64)
            (a @ a).sum().item()
        info["warm_up_seconds"] = round(time.perf_counter() - t0, 3)
        return info

    @torch.no_grad()
    def _warm_synthetic(self) -> None:
        """Runs a one-layer bf16 model of Llama-3-8B's widths through prefill, decode and sampling, so
        that the kernels a real model needs are loaded (CUDA loads them lazily) before any model is
        assigned. Freed afterwards."""
        from .config import parse_config

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
        model = LlamaModel(cfg, tensors, dt, dev, 2048)
        runner = ModelRunner(model, 160, self.options.block_size, 2048)
        engine = Engine(runner, EngineConfig(), cfg.vocab_size)
        self._warm(engine)
        del engine, runner, model, tensors
        torch.cuda.synchronize(dev)
        torch.cuda.empty_cache()

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

    def _kv_bytes(self, req: LoadRequest, cfg: ModelConfig, dtype: torch.dtype, weights_bytes: int) -> int:
        if req.kv_cache_bytes:
            return req.kv_cache_bytes
        if self.options.kv_cache_bytes:
            return self.options.kv_cache_bytes
        if self.device.type == "cuda":
            free, total = torch.cuda.mem_get_info(self.device)
            reserve = int(total * (1 - self.options.gpu_memory_utilization)) + (2 << 30)
            return max(free - reserve, 64 << 20)
        return self.options.cpu_kv_cache_bytes

    def load(self, req: LoadRequest, start_engine: bool = False) -> LoadedModel:
        """Builds the model on the weights the request points at. With start_engine the step loop
        thread starts (and warms up) before this returns; without, the caller drives the engine."""
        with self._lock:
            t0 = time.perf_counter()
            index = req.index
            if req.model and req.model in self.models:
                raise LoadError(f"a model named {req.model!r} is already loaded", "ALREADY_EXISTS")
            cfg = parse_config(req.config_json)
            alloc_id = ""
            if req.location == "host":
                weights = load_from_host(index, req.host_path, req.host_offset, req.host_length, req.chunk_offsets, self.device)
            elif req.location == "device":
                alloc = self.allocations.get(req.allocation_id)
                if alloc is None:
                    raise LoadError(f"no allocation {req.allocation_id!r} (AllocateWeights first)", "NOT_FOUND")
                weights = load_from_device(index, alloc, req.chunk_offsets)
                alloc_id = alloc.allocation_id
            elif req.location == "folder":
                if not req.folder:
                    raise LoadError("the checkpoint folder path is empty")
                weights = load_from_folder(index if len(index.chunks) else None, req.folder, self.device, self.options.verify_checksums)
                if not len(index.chunks):
                    from .weights import read_index

                    index = read_index(req.folder)
            else:
                raise LoadError("LoadWeights needs a memory location (host, device or folder)")
            t_weights = time.perf_counter()
            name = req.model or model_name(index.ref)
            try:
                if name in self.models:
                    raise LoadError(f"a model named {name!r} is already loaded", "ALREADY_EXISTS")
                dtype = self._compute_dtype(req, index)
                elsize = torch.empty((), dtype=dtype).element_size()
                kv_bytes = self._kv_bytes(req, cfg, dtype, weights.nbytes)
                per_block = self.options.block_size * cfg.kv_bytes_per_token * elsize
                num_blocks = max(2, kv_bytes // per_block)
                limit = req.max_model_len or cfg.max_position_embeddings
                if cfg.sliding_window:
                    limit = min(limit, cfg.sliding_window)
                max_len = min(limit, (num_blocks - 1) * self.options.block_size)
                if max_len < 2:
                    raise LoadError("the KV cache is too small for even one token", "RESOURCE_EXHAUSTED")
                marks = [("weights", t_weights)]
                model = LlamaModel(cfg, weights.tensors, dtype, self.device, max_len)
                if model.converted_bytes:
                    log.warning("weights converted to %s: %d bytes copied", dtype, model.converted_bytes)
                runner = ModelRunner(model, num_blocks, self.options.block_size, max_len)
                marks.append(("model+kv", time.perf_counter()))
                engine = Engine(
                    runner,
                    EngineConfig(self.options.max_num_seqs, self.options.max_num_batched_tokens, self.options.enable_prefix_caching),
                    cfg.vocab_size,
                    cfg.eos_token_ids,
                )
                graphs = self.device.type == "cuda" and self.options.cuda_graphs

                warm = self.options.load_warm
                if warm == "auto":
                    # the synthetic model at start loaded the kernels; what is left per thread (cuBLAS
                    # handle) costs the first request less than a warm-up pass costs LoadWeights
                    warm = "none" if self.kernels_warm else "light" if self.device.type != "cuda" else "full"

                def prepare() -> None:
                    """Warm-up (and graphs asked for at load), in the thread that will serve (CUDA state
                    is per thread). The other graphs are captured later in that same thread: on first
                    use of their shape, or one at a time while the engine is idle."""
                    if warm != "none":
                        self._warm(engine, light=warm == "light")
                        marks.append((f"warm-up ({warm})", time.perf_counter()))
                    if graphs:
                        planned = runner.plan_graphs(
                            min(self.options.graph_max_batch, self.options.max_num_seqs),
                            max_context=self.options.graph_max_context,
                        )
                        if self.options.graph_capture_at_load:
                            runner.capture_graphs(0, count=self.options.graph_capture_at_load)
                        engine.idle_work = runner.capture_next
                        marks.append((f"graphs {len(runner.graphs)} of {planned}", time.perf_counter()))

                if start_engine:
                    engine.start(warm=prepare)
                else:
                    prepare()
            except BaseException:
                weights.release()
                raise
            seconds = time.perf_counter() - t0
            lm = LoadedModel(index.ref, cfg, weights, model, runner, engine, dtype, seconds, alloc_id, name, num_blocks - 1)
            self.models[name] = lm
            prev, parts = t0, []
            for name, t in marks:
                parts.append(f"{name} {t - prev:.3f} s")
                prev = t
            log.info(
                "loaded %s (%s, %s, %s) from %s in %.3f s (%s); %d KV blocks of %d, max_model_len %d",
                name,
                cfg.architecture,
                dtype,
                self.device,
                weights.source,
                seconds,
                ", ".join(parts),
                num_blocks - 1,
                self.options.block_size,
                max_len,
            )
            return lm

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
        """Drops one model (its sequences end with ABORT), its KV cache and its device allocations;
        an empty name drops every model and allocation. Bytes released (0 when nothing had that name)."""
        with self._lock:
            freed = 0
            names = [name] if name else list(self.models)
            alloc_ids = [a for a, m in self.allocation_model.items() if not name or m == name]
            for n in names:
                lm = self.models.pop(n, None)
                if lm is None:
                    continue
                lm.engine.stop(abort_all=True)
                freed += lm.runner.kv_bytes + lm.model.converted_bytes
                if lm.weights.source != "device":
                    freed += lm.weights.nbytes
                elif lm.allocation_id and lm.allocation_id not in alloc_ids:
                    alloc_ids.append(lm.allocation_id)
                lm.runner.release()
                lm.weights.release()
                del lm
            gc.collect()
            for aid in alloc_ids:
                alloc = self.allocations.pop(aid, None)
                self.allocation_model.pop(aid, None)
                if alloc is not None:
                    freed += alloc.nbytes
                    alloc.free()
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
                torch.cuda.empty_cache()
            return freed

    def shutdown(self) -> None:
        """Unloads and frees everything (SIGTERM)."""
        try:
            self.unload()
        except Exception:
            log.exception("unload at shutdown failed")

    # ---- statistics -------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """GetStats' figures: the device, totals and one entry per model."""
        out: dict[str, Any] = {"device": str(self.device), "pid": os.getpid()}
        models = list(self.models.values())
        per_model = []
        for lm in models:
            st = lm.engine.stats()
            st.update(
                model=lm.name,
                ref=lm.ref,
                kv_blocks_cached=len(lm.engine.blocks.cached),
                kv_blocks_floor=lm.floor_blocks,
                weight_bytes=lm.weights.nbytes + lm.model.converted_bytes,
                block_size=lm.runner.block_size,
                max_model_len=lm.runner.max_model_len,
                prompt_tokens=lm.engine.prompt_tokens_total,
                cached_tokens=lm.engine.cached_tokens_total,
            )
            per_model.append(st)
        out["models"] = per_model
        for key in ("running", "waiting", "kv_blocks_total", "kv_blocks_used", "generated_tokens"):
            out[key] = sum(int(m[key]) for m in per_model)
        prompt = sum(m["prompt_tokens"] for m in per_model)
        out["prefix_hit_rate"] = sum(m["cached_tokens"] for m in per_model) / prompt if prompt else 0.0
        if models:
            out["ref"] = models[0].ref
        out["kv_pool_bytes"] = sum(lm.runner.kv_bytes for lm in models)
        out["kv_page_bytes"] = models[0].runner.kv_bytes // max(1, models[0].runner.num_blocks) if models else 0
        out["weights_budget_bytes"] = 0
        if self.device.type == "cuda":
            raw = sum(a.nbytes for a in self.allocations.values())
            total = torch.cuda.get_device_properties(self.device).total_memory
            out["device_memory_used"] = torch.cuda.memory_reserved(self.device) + raw
            out["device_memory_total"] = total
            out["weights_budget_bytes"] = max(0, int(total * self.options.gpu_memory_utilization) - out["kv_pool_bytes"] - (2 << 30))
        else:
            out["device_memory_used"] = sum(lm.runner.kv_bytes + lm.model.converted_bytes for lm in models)
            out["device_memory_total"] = 0
        return out


def model_name(ref: checkpoint_pb2.CheckpointRef) -> str:
    """The default name of a model inside the worker: "<model_id>@<revision>" (the agent's model key)."""
    return f"{ref.model_id or 'model'}@{ref.revision or 'main'}"
