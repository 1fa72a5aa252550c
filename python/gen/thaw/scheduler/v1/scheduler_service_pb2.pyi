from thaw.agent.v1 import agent_pb2 as _agent_pb2
from thaw.engine.v1 import engine_pb2 as _engine_pb2
from thaw.scheduler.v1 import scheduler_pb2 as _scheduler_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ChatCompletionRequest(_message.Message):
    __slots__ = ["add_generation_prompt", "chat_template", "messages", "model", "options", "request_id", "sampling"]
    ADD_GENERATION_PROMPT_FIELD_NUMBER: _ClassVar[int]
    CHAT_TEMPLATE_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_FIELD_NUMBER: _ClassVar[int]
    add_generation_prompt: bool
    chat_template: str
    messages: _containers.RepeatedCompositeFieldContainer[_agent_pb2.ChatMessage]
    model: str
    options: _scheduler_pb2.CompletionOptions
    request_id: str
    sampling: _engine_pb2.SamplingParams
    def __init__(self, model: _Optional[str] = ..., messages: _Optional[_Iterable[_Union[_agent_pb2.ChatMessage, _Mapping]]] = ..., sampling: _Optional[_Union[_engine_pb2.SamplingParams, _Mapping]] = ..., options: _Optional[_Union[_scheduler_pb2.CompletionOptions, _Mapping]] = ..., request_id: _Optional[str] = ..., chat_template: _Optional[str] = ..., add_generation_prompt: bool = ...) -> None: ...

class ChatCompletionResponse(_message.Message):
    __slots__ = ["agent_id", "finish_reason", "index", "text", "tokens", "usage"]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    finish_reason: _scheduler_pb2.CompletionFinishReason
    index: int
    text: str
    tokens: _containers.RepeatedCompositeFieldContainer[_agent_pb2.TokenOutput]
    usage: _agent_pb2.Usage
    def __init__(self, index: _Optional[int] = ..., text: _Optional[str] = ..., tokens: _Optional[_Iterable[_Union[_agent_pb2.TokenOutput, _Mapping]]] = ..., finish_reason: _Optional[_Union[_scheduler_pb2.CompletionFinishReason, str]] = ..., usage: _Optional[_Union[_agent_pb2.Usage, _Mapping]] = ..., agent_id: _Optional[str] = ...) -> None: ...

class CompletionRequest(_message.Message):
    __slots__ = ["echo", "model", "options", "request_id", "sampling", "text", "tokens"]
    ECHO_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    echo: bool
    model: str
    options: _scheduler_pb2.CompletionOptions
    request_id: str
    sampling: _engine_pb2.SamplingParams
    text: str
    tokens: _agent_pb2.TokenPrompt
    def __init__(self, model: _Optional[str] = ..., text: _Optional[str] = ..., tokens: _Optional[_Union[_agent_pb2.TokenPrompt, _Mapping]] = ..., sampling: _Optional[_Union[_engine_pb2.SamplingParams, _Mapping]] = ..., options: _Optional[_Union[_scheduler_pb2.CompletionOptions, _Mapping]] = ..., request_id: _Optional[str] = ..., echo: bool = ...) -> None: ...

class CompletionResponse(_message.Message):
    __slots__ = ["agent_id", "finish_reason", "index", "text", "tokens", "usage"]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    finish_reason: _scheduler_pb2.CompletionFinishReason
    index: int
    text: str
    tokens: _containers.RepeatedCompositeFieldContainer[_agent_pb2.TokenOutput]
    usage: _agent_pb2.Usage
    def __init__(self, index: _Optional[int] = ..., text: _Optional[str] = ..., tokens: _Optional[_Iterable[_Union[_agent_pb2.TokenOutput, _Mapping]]] = ..., finish_reason: _Optional[_Union[_scheduler_pb2.CompletionFinishReason, str]] = ..., usage: _Optional[_Union[_agent_pb2.Usage, _Mapping]] = ..., agent_id: _Optional[str] = ...) -> None: ...

class ExplainPlacementRequest(_message.Message):
    __slots__ = ["model"]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: str
    def __init__(self, model: _Optional[str] = ...) -> None: ...

class ExplainPlacementResponse(_message.Message):
    __slots__ = ["alpha", "beta", "delta", "epsilon", "gamma", "model_bytes", "scores", "zeta"]
    ALPHA_FIELD_NUMBER: _ClassVar[int]
    BETA_FIELD_NUMBER: _ClassVar[int]
    DELTA_FIELD_NUMBER: _ClassVar[int]
    EPSILON_FIELD_NUMBER: _ClassVar[int]
    GAMMA_FIELD_NUMBER: _ClassVar[int]
    MODEL_BYTES_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    ZETA_FIELD_NUMBER: _ClassVar[int]
    alpha: float
    beta: float
    delta: float
    epsilon: float
    gamma: float
    model_bytes: int
    scores: _containers.RepeatedCompositeFieldContainer[_scheduler_pb2.PlacementScore]
    zeta: float
    def __init__(self, scores: _Optional[_Iterable[_Union[_scheduler_pb2.PlacementScore, _Mapping]]] = ..., alpha: _Optional[float] = ..., beta: _Optional[float] = ..., gamma: _Optional[float] = ..., delta: _Optional[float] = ..., epsilon: _Optional[float] = ..., model_bytes: _Optional[int] = ..., zeta: _Optional[float] = ...) -> None: ...

class HeartbeatRequest(_message.Message):
    __slots__ = ["status"]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    status: _agent_pb2.AgentStatus
    def __init__(self, status: _Optional[_Union[_agent_pb2.AgentStatus, _Mapping]] = ...) -> None: ...

class HeartbeatResponse(_message.Message):
    __slots__ = ["interval_ms"]
    INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    interval_ms: int
    def __init__(self, interval_ms: _Optional[int] = ...) -> None: ...

class ListAgentsRequest(_message.Message):
    __slots__ = []
    def __init__(self) -> None: ...

class ListAgentsResponse(_message.Message):
    __slots__ = ["agents"]
    AGENTS_FIELD_NUMBER: _ClassVar[int]
    agents: _containers.RepeatedCompositeFieldContainer[_scheduler_pb2.AgentInfo]
    def __init__(self, agents: _Optional[_Iterable[_Union[_scheduler_pb2.AgentInfo, _Mapping]]] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = []
    def __init__(self) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ["models"]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[_scheduler_pb2.ModelInfo]
    def __init__(self, models: _Optional[_Iterable[_Union[_scheduler_pb2.ModelInfo, _Mapping]]] = ...) -> None: ...

class RegisterModelRequest(_message.Message):
    __slots__ = ["model"]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: _scheduler_pb2.ModelSpec
    def __init__(self, model: _Optional[_Union[_scheduler_pb2.ModelSpec, _Mapping]] = ...) -> None: ...

class RegisterModelResponse(_message.Message):
    __slots__ = ["model"]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: _scheduler_pb2.ModelInfo
    def __init__(self, model: _Optional[_Union[_scheduler_pb2.ModelInfo, _Mapping]] = ...) -> None: ...

class UnregisterModelRequest(_message.Message):
    __slots__ = ["id"]
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class UnregisterModelResponse(_message.Message):
    __slots__ = []
    def __init__(self) -> None: ...
