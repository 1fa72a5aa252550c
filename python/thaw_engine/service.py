"""thaw.engine.v1.EngineService over grpc.aio."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, AsyncIterator, Callable

import grpc
import torch

from thaw.checkpoint.v1 import checkpoint_pb2
from thaw.engine.v1 import engine_pb2, engine_service_pb2, engine_service_pb2_grpc

from .config import ConfigError
from .engine import EngineClosed, Event, FinishReason, Sink
from .model import ModelError
from .sampling import SamplingOptions
from .weights import LoadError
from .worker import LoadRequest, Worker

log = logging.getLogger("thaw_engine.service")

_FINISH = {
    None: engine_pb2.FINISH_REASON_UNSPECIFIED,
    FinishReason.STOP: engine_pb2.FINISH_REASON_STOP,
    FinishReason.LENGTH: engine_pb2.FINISH_REASON_LENGTH,
    FinishReason.ABORT: engine_pb2.FINISH_REASON_ABORT,
}


def _status(code: str) -> grpc.StatusCode:
    return getattr(grpc.StatusCode, code, grpc.StatusCode.INTERNAL)


def _is_oom(e: BaseException) -> bool:
    oom = getattr(torch.cuda, "OutOfMemoryError", None)
    return (oom is not None and isinstance(e, oom)) or isinstance(e, MemoryError) or "out of memory" in str(e).lower()


def load_request_from_proto(request: engine_service_pb2.LoadWeightsRequest) -> LoadRequest:
    """Decodes LoadWeightsRequest."""
    mem = request.memory
    which = mem.WhichOneof("location")
    req = LoadRequest(
        index=request.index,
        config_json=request.config_json,
        location=which or "",
        chunk_offsets=list(mem.chunk_offsets),
        dtype=request.dtype,
        max_model_len=request.max_model_len,
        kv_cache_bytes=request.kv_cache_bytes,
        model=request.model,
    )
    if which == "host":
        req.host_path, req.host_offset, req.host_length = mem.host.path, mem.host.offset, mem.host.length
    elif which == "device":
        req.allocation_id = mem.device.allocation_id
    elif which == "folder":
        req.folder = mem.folder.path
    return req


def _to_proto(ev: Event) -> engine_service_pb2.GenerateResponse:
    msg = engine_service_pb2.GenerateResponse(token_ids=ev.token_ids, finish_reason=_FINISH.get(ev.finish_reason, 0))
    if ev.prompt_tokens is not None:
        msg.prompt_tokens = ev.prompt_tokens
        msg.cached_prompt_tokens = ev.cached_prompt_tokens or 0
    for r in ev.logprobs:
        pl = msg.logprobs.add()
        pl.sampled.token_id = r.token
        pl.sampled.logprob = r.logprob if r.logprob is not None else 0.0
        for tid, lp in r.top or []:
            pl.top.add(token_id=tid, logprob=lp)
    return msg


def _merge(a: Event, b: Event) -> Event:
    a.token_ids.extend(b.token_ids)
    a.logprobs.extend(b.logprobs)
    if b.prompt_tokens is not None and a.prompt_tokens is None:
        a.prompt_tokens, a.cached_prompt_tokens = b.prompt_tokens, b.cached_prompt_tokens
    a.finish_reason = b.finish_reason
    a.error = b.error
    return a


def event_dispatcher(loop: asyncio.AbstractEventLoop) -> Callable[[list[tuple[Sink, Event]]], None]:
    """Step loop thread -> the asyncio loop: one hop per step for all the step's events (the sinks
    are Generate calls' queues, which only the event loop may touch)."""

    def dispatch(events: list[tuple[Sink, Event]]) -> None:
        if loop.is_closed():
            return

        def deliver() -> None:
            for sink, ev in events:
                sink(ev)

        try:
            loop.call_soon_threadsafe(deliver)
        except RuntimeError:  # loop closing
            pass

    return dispatch


class EngineServicer(engine_service_pb2_grpc.EngineServiceServicer):
    """Implements EngineService on a :class:`Worker` (built with ``dispatch=event_dispatcher(loop)``)."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self._load_lock = asyncio.Lock()

    async def AllocateWeights(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            alloc = await asyncio.to_thread(self.worker.allocate, int(request.bytes), request.model)
        except LoadError as e:
            await context.abort(_status(e.code), str(e))
        return engine_service_pb2.AllocateWeightsResponse(
            allocation_id=alloc.allocation_id, ipc_handle=alloc.ipc_handle, device_index=alloc.index, bytes=alloc.nbytes
        )

    async def LoadWeights(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        async with self._load_lock:
            code: grpc.StatusCode | None = None
            detail = ""
            try:
                loaded = await asyncio.to_thread(self.worker.load, load_request_from_proto(request))
            except LoadError as e:
                code, detail = _status(e.code), str(e)
            except (ConfigError, ModelError, ValueError) as e:
                code, detail = grpc.StatusCode.INVALID_ARGUMENT, str(e)
            except Exception as e:  # noqa: BLE001 - reported to the caller
                if _is_oom(e):
                    code, detail = grpc.StatusCode.RESOURCE_EXHAUSTED, f"out of memory while loading: {e}"
                else:
                    log.exception("LoadWeights failed")
                    code, detail = grpc.StatusCode.INTERNAL, f"{type(e).__name__}: {e}"
            if code is not None:
                log.warning("LoadWeights refused: %s %s", code.name, detail)
                await context.abort(code, detail)
            return engine_service_pb2.LoadWeightsResponse(
                seconds=loaded.seconds,
                max_model_len=loaded.runner.max_model_len,
                kv_blocks=loaded.engine.blocks.usable_blocks,
                block_size=loaded.runner.block_size,
                device=str(self.worker.device),
                model=loaded.name,
                kv_blocks_floor=loaded.floor_blocks,
            )

    async def Generate(self, request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        try:
            loaded = self.worker.get(request.model)
        except LoadError as e:
            await context.abort(_status(e.code), str(e))
        engine = loaded.engine
        options = SamplingOptions.from_proto(request.sampling if request.HasField("sampling") else None, loaded.cfg.eos_token_ids)
        queue: asyncio.Queue[Event] = asyncio.Queue()
        try:
            seq = engine.add(request.request_id, list(request.prompt_token_ids), options, queue.put_nowait)
        except ValueError as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        except EngineClosed as e:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(e))
        try:
            while True:
                ev = await queue.get()
                while not queue.empty() and ev.finish_reason is None:  # coalesce what piled up
                    ev = _merge(ev, queue.get_nowait())
                if ev.finish_reason == FinishReason.ERROR:
                    oom = "out of" in (ev.error or "")
                    await context.abort(
                        grpc.StatusCode.RESOURCE_EXHAUSTED if oom else grpc.StatusCode.INTERNAL, ev.error or "generation failed"
                    )
                yield _to_proto(ev)
                if ev.finish_reason is not None:
                    return
        finally:
            engine.abort(seq)

    async def GetStats(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        s = self.worker.stats()
        msg = engine_service_pb2.GetStatsResponse(
            running=int(s.get("running", 0)),
            waiting=int(s.get("waiting", 0)),
            kv_blocks_total=int(s.get("kv_blocks_total", 0)),
            kv_blocks_used=int(s.get("kv_blocks_used", 0)),
            prefix_hit_rate=float(s.get("prefix_hit_rate", 0.0)),
            device=s["device"],
            device_memory_used=int(s.get("device_memory_used", 0)),
            device_memory_total=int(s.get("device_memory_total", 0)),
            generated_tokens=int(s.get("generated_tokens", 0)),
            pid=int(s["pid"]),
            kv_pool_bytes=int(s.get("kv_pool_bytes", 0)),
            kv_page_bytes=int(s.get("kv_page_bytes", 0)),
            weights_budget_bytes=int(s.get("weights_budget_bytes", 0)),
        )
        ref = s.get("ref")
        if isinstance(ref, checkpoint_pb2.CheckpointRef):
            msg.model.CopyFrom(ref)
        for m in s.get("models", []):
            ms = msg.models.add(
                model=m["model"],
                running=int(m["running"]),
                waiting=int(m["waiting"]),
                kv_blocks_used=int(m["kv_blocks_used"]),
                kv_blocks_cached=int(m["kv_blocks_cached"]),
                kv_blocks_floor=int(m["kv_blocks_floor"]),
                prefix_hit_rate=float(m["prefix_hit_rate"]),
                generated_tokens=int(m["generated_tokens"]),
                weight_bytes=int(m["weight_bytes"]),
                preemptions=int(m["preemptions"]),
                block_size=int(m["block_size"]),
                max_model_len=int(m["max_model_len"]),
            )
            ms.ref.CopyFrom(m["ref"])
        return msg

    async def Unload(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        async with self._load_lock:
            freed = await asyncio.to_thread(self.worker.unload, request.model)
        return engine_service_pb2.UnloadResponse(bytes_freed=freed)
