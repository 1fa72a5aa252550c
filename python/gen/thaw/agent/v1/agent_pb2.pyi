from thaw.checkpoint.v1 import checkpoint_pb2 as _checkpoint_pb2
from thaw.engine.v1 import engine_pb2 as _engine_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor
ENGINE_STATE_FAILED: EngineState
ENGINE_STATE_IDLE: EngineState
ENGINE_STATE_LOADING: EngineState
ENGINE_STATE_SERVING: EngineState
ENGINE_STATE_STARTING: EngineState
ENGINE_STATE_UNSPECIFIED: EngineState
TIER_DISK: Tier
TIER_DRAM: Tier
TIER_GPU: Tier
TIER_REMOTE: Tier
TIER_UNSPECIFIED: Tier

class AgentStatus(_message.Message):
    __slots__ = ["address", "agent_id", "devices", "dram_pool_bytes", "engines", "gpu_count", "models", "queue_length", "tiers"]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    DRAM_POOL_BYTES_FIELD_NUMBER: _ClassVar[int]
    ENGINES_FIELD_NUMBER: _ClassVar[int]
    GPU_COUNT_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    QUEUE_LENGTH_FIELD_NUMBER: _ClassVar[int]
    TIERS_FIELD_NUMBER: _ClassVar[int]
    address: str
    agent_id: str
    devices: _containers.RepeatedCompositeFieldContainer[DeviceStatus]
    dram_pool_bytes: int
    engines: _containers.RepeatedCompositeFieldContainer[EngineInfo]
    gpu_count: int
    models: _containers.RepeatedCompositeFieldContainer[ModelCacheEntry]
    queue_length: int
    tiers: _containers.RepeatedCompositeFieldContainer[TierCapacity]
    def __init__(self, agent_id: _Optional[str] = ..., address: _Optional[str] = ..., models: _Optional[_Iterable[_Union[ModelCacheEntry, _Mapping]]] = ..., tiers: _Optional[_Iterable[_Union[TierCapacity, _Mapping]]] = ..., engines: _Optional[_Iterable[_Union[EngineInfo, _Mapping]]] = ..., queue_length: _Optional[int] = ..., gpu_count: _Optional[int] = ..., devices: _Optional[_Iterable[_Union[DeviceStatus, _Mapping]]] = ..., dram_pool_bytes: _Optional[int] = ...) -> None: ...

class ChatMessage(_message.Message):
    __slots__ = ["content", "name", "role"]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    content: str
    name: str
    role: str
    def __init__(self, role: _Optional[str] = ..., content: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class ChatPrompt(_message.Message):
    __slots__ = ["add_generation_prompt", "chat_template", "messages"]
    ADD_GENERATION_PROMPT_FIELD_NUMBER: _ClassVar[int]
    CHAT_TEMPLATE_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    add_generation_prompt: bool
    chat_template: str
    messages: _containers.RepeatedCompositeFieldContainer[ChatMessage]
    def __init__(self, messages: _Optional[_Iterable[_Union[ChatMessage, _Mapping]]] = ..., add_generation_prompt: bool = ..., chat_template: _Optional[str] = ...) -> None: ...

class DeviceStatus(_message.Message):
    __slots__ = ["budget_bytes", "device", "engine_id", "free_bytes", "kv_pool_bytes", "kv_used_bytes", "max_model_bytes", "resident", "used_bytes"]
    BUDGET_BYTES_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    ENGINE_ID_FIELD_NUMBER: _ClassVar[int]
    FREE_BYTES_FIELD_NUMBER: _ClassVar[int]
    KV_POOL_BYTES_FIELD_NUMBER: _ClassVar[int]
    KV_USED_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_MODEL_BYTES_FIELD_NUMBER: _ClassVar[int]
    RESIDENT_FIELD_NUMBER: _ClassVar[int]
    USED_BYTES_FIELD_NUMBER: _ClassVar[int]
    budget_bytes: int
    device: str
    engine_id: str
    free_bytes: int
    kv_pool_bytes: int
    kv_used_bytes: int
    max_model_bytes: int
    resident: _containers.RepeatedCompositeFieldContainer[ModelResidency]
    used_bytes: int
    def __init__(self, device: _Optional[str] = ..., engine_id: _Optional[str] = ..., budget_bytes: _Optional[int] = ..., used_bytes: _Optional[int] = ..., free_bytes: _Optional[int] = ..., kv_pool_bytes: _Optional[int] = ..., kv_used_bytes: _Optional[int] = ..., resident: _Optional[_Iterable[_Union[ModelResidency, _Mapping]]] = ..., max_model_bytes: _Optional[int] = ...) -> None: ...

class EngineInfo(_message.Message):
    __slots__ = ["device", "engine_id", "models", "pid", "running", "state", "waiting"]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    ENGINE_ID_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    WAITING_FIELD_NUMBER: _ClassVar[int]
    device: str
    engine_id: str
    models: _containers.RepeatedCompositeFieldContainer[_checkpoint_pb2.CheckpointRef]
    pid: int
    running: int
    state: EngineState
    waiting: int
    def __init__(self, engine_id: _Optional[str] = ..., state: _Optional[_Union[EngineState, str]] = ..., device: _Optional[str] = ..., models: _Optional[_Iterable[_Union[_checkpoint_pb2.CheckpointRef, _Mapping]]] = ..., pid: _Optional[int] = ..., running: _Optional[int] = ..., waiting: _Optional[int] = ...) -> None: ...

class ModelCacheEntry(_message.Message):
    __slots__ = ["bytes", "device", "disk_chunks", "idle_ms", "kv_bytes_used", "kv_hit_rate", "queue_length", "ref", "tier", "total_chunks"]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    DISK_CHUNKS_FIELD_NUMBER: _ClassVar[int]
    IDLE_MS_FIELD_NUMBER: _ClassVar[int]
    KV_BYTES_USED_FIELD_NUMBER: _ClassVar[int]
    KV_HIT_RATE_FIELD_NUMBER: _ClassVar[int]
    QUEUE_LENGTH_FIELD_NUMBER: _ClassVar[int]
    REF_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    TOTAL_CHUNKS_FIELD_NUMBER: _ClassVar[int]
    bytes: int
    device: str
    disk_chunks: int
    idle_ms: int
    kv_bytes_used: int
    kv_hit_rate: float
    queue_length: int
    ref: _checkpoint_pb2.CheckpointRef
    tier: Tier
    total_chunks: int
    def __init__(self, ref: _Optional[_Union[_checkpoint_pb2.CheckpointRef, _Mapping]] = ..., tier: _Optional[_Union[Tier, str]] = ..., bytes: _Optional[int] = ..., disk_chunks: _Optional[int] = ..., total_chunks: _Optional[int] = ..., kv_hit_rate: _Optional[float] = ..., queue_length: _Optional[int] = ..., idle_ms: _Optional[int] = ..., device: _Optional[str] = ..., kv_bytes_used: _Optional[int] = ...) -> None: ...

class ModelResidency(_message.Message):
    __slots__ = ["bytes", "idle_ms", "ref", "running"]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    IDLE_MS_FIELD_NUMBER: _ClassVar[int]
    REF_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    bytes: int
    idle_ms: int
    ref: _checkpoint_pb2.CheckpointRef
    running: int
    def __init__(self, ref: _Optional[_Union[_checkpoint_pb2.CheckpointRef, _Mapping]] = ..., bytes: _Optional[int] = ..., running: _Optional[int] = ..., idle_ms: _Optional[int] = ...) -> None: ...

class TierCapacity(_message.Message):
    __slots__ = ["bandwidth_bytes_per_second", "free_bytes", "tier", "total_bytes"]
    BANDWIDTH_BYTES_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    FREE_BYTES_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    bandwidth_bytes_per_second: float
    free_bytes: int
    tier: Tier
    total_bytes: int
    def __init__(self, tier: _Optional[_Union[Tier, str]] = ..., total_bytes: _Optional[int] = ..., free_bytes: _Optional[int] = ..., bandwidth_bytes_per_second: _Optional[float] = ...) -> None: ...

class TierTiming(_message.Message):
    __slots__ = ["bytes", "seconds", "tier"]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    bytes: int
    seconds: float
    tier: Tier
    def __init__(self, tier: _Optional[_Union[Tier, str]] = ..., bytes: _Optional[int] = ..., seconds: _Optional[float] = ...) -> None: ...

class TokenOutput(_message.Message):
    __slots__ = ["logprobs", "text", "token_id"]
    LOGPROBS_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    logprobs: _engine_pb2.PositionLogprobs
    text: str
    token_id: int
    def __init__(self, token_id: _Optional[int] = ..., text: _Optional[str] = ..., logprobs: _Optional[_Union[_engine_pb2.PositionLogprobs, _Mapping]] = ...) -> None: ...

class TokenPrompt(_message.Message):
    __slots__ = ["token_ids"]
    TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    token_ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, token_ids: _Optional[_Iterable[int]] = ...) -> None: ...

class Usage(_message.Message):
    __slots__ = ["cached_tokens", "completion_tokens", "prompt_tokens"]
    CACHED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    cached_tokens: int
    completion_tokens: int
    prompt_tokens: int
    def __init__(self, prompt_tokens: _Optional[int] = ..., completion_tokens: _Optional[int] = ..., cached_tokens: _Optional[int] = ...) -> None: ...

class Tier(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = []

class EngineState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = []
