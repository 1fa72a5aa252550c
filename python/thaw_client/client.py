"""ThawClient: the SchedulerService of a thaw orchestrator over gRPC (h2c)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Mapping, Sequence

import grpc

from ._gen import agent_pb2, engine_pb2, scheduler_pb2, scheduler_service_pb2 as svc, scheduler_service_pb2_grpc

_FINISH = {
    scheduler_pb2.COMPLETION_FINISH_REASON_STOP: "stop",
    scheduler_pb2.COMPLETION_FINISH_REASON_LENGTH: "length",
    scheduler_pb2.COMPLETION_FINISH_REASON_ABORT: "abort",
}


class ThawError(Exception):
    """A failed call: ``code`` is the gRPC status (e.g. ``grpc.StatusCode.NOT_FOUND``)."""

    def __init__(self, code: grpc.StatusCode, message: str, retry_after: float | None = None) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message
        self.retry_after = retry_after


@dataclass
class Delta:
    """Output of one choice since its previous delta."""

    index: int
    text: str
    token_ids: list[int]
    finish_reason: str | None
    usage: dict[str, int] | None
    agent_id: str


@dataclass
class Completion:
    """A finished completion (``text`` is choice 0)."""

    texts: list[str]
    finish_reasons: list[str | None]
    prompt_tokens: int
    completion_tokens: int
    agent_ids: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return self.texts[0]


def _target(address: str) -> str:
    for prefix in ("http://", "grpc://"):
        if address.startswith(prefix):
            return address[len(prefix):].rstrip("/")
    return address


def _error(err: grpc.RpcError) -> ThawError:
    code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
    details = err.details() if hasattr(err, "details") else str(err)
    retry_after = None
    for key, value in (err.trailing_metadata() or ()) if hasattr(err, "trailing_metadata") else ():
        if key == "retry-after":
            try:
                retry_after = float(value)
            except ValueError:
                pass
    return ThawError(code, details or "", retry_after)


class ThawClient:
    """Registers models, lists agents, explains placement, and streams completions.

    ``address`` is ``host:port`` (or ``http://host:port``) of the orchestrator, default
    ``$THAW_ORCHESTRATOR`` or ``127.0.0.1:8000``; ``token`` is the internal token
    (default ``$THAW_INTERNAL_TOKEN``) when the orchestrator requires one.
    """

    def __init__(self, address: str | None = None, *, token: str | None = None, timeout: float | None = None) -> None:
        self.address = _target(address or os.environ.get("THAW_ORCHESTRATOR") or "127.0.0.1:8000")
        self._channel = grpc.insecure_channel(self.address)
        self.stub = scheduler_service_pb2_grpc.SchedulerServiceStub(self._channel)
        token = token if token is not None else os.environ.get("THAW_INTERNAL_TOKEN")
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self._timeout = timeout

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> ThawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _unary(self, method: Any, request: Any, timeout: float | None = None) -> Any:
        try:
            return method(request, metadata=self._metadata, timeout=timeout or self._timeout)
        except grpc.RpcError as err:
            raise _error(err) from None

    # ── operators ──────────────────────────────────────────────────────────────────────────────

    def register_model(
        self,
        id: str,
        *,
        source: str = "",
        revision: str = "",
        keep_alive_seconds: int = 0,
        max_model_len: int = 0,
        owned_by: str = "",
    ) -> scheduler_pb2.ModelInfo:
        """Registers (or replaces) a model; it is converted on its first request."""
        spec = scheduler_pb2.ModelSpec(
            id=id, source=source, revision=revision, keep_alive_seconds=keep_alive_seconds, max_model_len=max_model_len, owned_by=owned_by
        )
        return self._unary(self.stub.RegisterModel, svc.RegisterModelRequest(model=spec)).model

    def unregister_model(self, id: str) -> None:
        self._unary(self.stub.UnregisterModel, svc.UnregisterModelRequest(id=id))

    def list_models(self) -> list[scheduler_pb2.ModelInfo]:
        return list(self._unary(self.stub.ListModels, svc.ListModelsRequest()).models)

    def list_agents(self) -> list[scheduler_pb2.AgentInfo]:
        return list(self._unary(self.stub.ListAgents, svc.ListAgentsRequest()).agents)

    def explain_placement(self, model: str) -> svc.ExplainPlacementResponse:
        """Every agent's placement score for ``model``, term by term, lowest (chosen) first."""
        return self._unary(self.stub.ExplainPlacement, svc.ExplainPlacementRequest(model=model))

    # ── completions ────────────────────────────────────────────────────────────────────────────

    def chat(self, model: str, messages: Iterable[Mapping[str, str]], **options: Any) -> Iterator[Delta]:
        """Streams a chat completion. Options: max_tokens, temperature, top_p, top_k, min_p, seed,
        presence_penalty, frequency_penalty, repetition_penalty, min_tokens, stop, stop_token_ids,
        ignore_eos, logprobs (alternatives per token), n, request_id, timeout."""
        timeout = options.pop("timeout", None)
        request = svc.ChatCompletionRequest(
            model=model,
            messages=[agent_pb2.ChatMessage(role=m["role"], content=m.get("content", ""), name=m.get("name", "")) for m in messages],
            sampling=_sampling(options),
            options=_options(options),
            request_id=options.pop("request_id", ""),
        )
        _no_leftovers(options)
        return self._stream(self.stub.ChatCompletion, request, timeout)

    def complete(self, model: str, prompt: str | Sequence[int], *, echo: bool = False, **options: Any) -> Iterator[Delta]:
        """Streams a text completion of ``prompt`` (text or token ids); options as for ``chat``."""
        timeout = options.pop("timeout", None)
        request = svc.CompletionRequest(
            model=model,
            sampling=_sampling(options),
            options=_options(options),
            request_id=options.pop("request_id", ""),
            echo=echo,
        )
        if isinstance(prompt, str):
            request.text = prompt
        else:
            request.tokens.token_ids.extend(prompt)
        _no_leftovers(options)
        return self._stream(self.stub.Completion, request, timeout)

    def chat_text(self, model: str, messages: Iterable[Mapping[str, str]], **options: Any) -> Completion:
        """A whole chat completion."""
        return _collect(self.chat(model, messages, **options), options.get("n", 1))

    def complete_text(self, model: str, prompt: str | Sequence[int], **options: Any) -> Completion:
        """A whole text completion."""
        return _collect(self.complete(model, prompt, **options), options.get("n", 1))

    def _stream(self, method: Any, request: Any, timeout: float | None) -> Iterator[Delta]:
        call = method(request, metadata=self._metadata, timeout=timeout or self._timeout)
        try:
            for r in call:
                usage = None
                if r.HasField("usage"):
                    usage = {
                        "prompt_tokens": r.usage.prompt_tokens,
                        "completion_tokens": r.usage.completion_tokens,
                        "cached_tokens": r.usage.cached_tokens,
                    }
                yield Delta(
                    index=r.index,
                    text=r.text,
                    token_ids=[t.token_id for t in r.tokens],
                    finish_reason=_FINISH.get(r.finish_reason),
                    usage=usage,
                    agent_id=r.agent_id,
                )
        except grpc.RpcError as err:
            raise _error(err) from None
        finally:
            call.cancel()


def _sampling(o: dict[str, Any]) -> engine_pb2.SamplingParams:
    s = engine_pb2.SamplingParams(
        top_k=o.pop("top_k", 0),
        min_p=o.pop("min_p", 0.0),
        presence_penalty=o.pop("presence_penalty", 0.0),
        frequency_penalty=o.pop("frequency_penalty", 0.0),
        max_tokens=o.pop("max_tokens", 0),
        min_tokens=o.pop("min_tokens", 0),
        stop_token_ids=o.pop("stop_token_ids", []),
        ignore_eos=o.pop("ignore_eos", False),
    )
    for name in ("temperature", "top_p", "repetition_penalty"):
        value = o.pop(name, None)
        if value is not None:
            setattr(s, name, value)
    seed = o.pop("seed", None)
    if seed is not None:
        s.seed = seed % (1 << 64)
    logprobs = o.pop("logprobs", None)
    if logprobs is not None:
        s.logprobs = True
        s.top_logprobs = int(logprobs)
    return s


def _options(o: dict[str, Any]) -> scheduler_pb2.CompletionOptions:
    stop = o.pop("stop", [])
    return scheduler_pb2.CompletionOptions(n=o.pop("n", 1), stop=[stop] if isinstance(stop, str) else list(stop), skip_special_tokens=True)


def _no_leftovers(o: dict[str, Any]) -> None:
    if o:
        raise TypeError(f"unknown options: {', '.join(sorted(o))}")


def _collect(deltas: Iterator[Delta], n: int) -> Completion:
    texts = [""] * n
    finish: list[str | None] = [None] * n
    agents = [""] * n
    prompt = completion = 0
    for d in deltas:
        texts[d.index] += d.text
        agents[d.index] = d.agent_id
        if d.finish_reason is not None:
            finish[d.index] = d.finish_reason
        if d.usage is not None:
            prompt = max(prompt, d.usage["prompt_tokens"])
            completion += d.usage["completion_tokens"]
    return Completion(texts=texts, finish_reasons=finish, prompt_tokens=prompt, completion_tokens=completion, agent_ids=agents)
