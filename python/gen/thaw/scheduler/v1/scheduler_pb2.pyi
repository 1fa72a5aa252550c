from thaw.agent.v1 import agent_pb2 as _agent_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

COMPLETION_FINISH_REASON_ABORT: CompletionFinishReason
COMPLETION_FINISH_REASON_LENGTH: CompletionFinishReason
COMPLETION_FINISH_REASON_STOP: CompletionFinishReason
COMPLETION_FINISH_REASON_UNSPECIFIED: CompletionFinishReason
DESCRIPTOR: _descriptor.FileDescriptor

class AgentInfo(_message.Message):
    __slots__ = ["expired", "last_heartbeat_unix_ms", "status"]
    EXPIRED_FIELD_NUMBER: _ClassVar[int]
    LAST_HEARTBEAT_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    expired: bool
    last_heartbeat_unix_ms: int
    status: _agent_pb2.AgentStatus
    def __init__(self, status: _Optional[_Union[_agent_pb2.AgentStatus, _Mapping]] = ..., last_heartbeat_unix_ms: _Optional[int] = ..., expired: bool = ...) -> None: ...

class CompletionOptions(_message.Message):
    __slots__ = ["include_stop_str_in_output", "n", "skip_special_tokens", "stop", "user"]
    INCLUDE_STOP_STR_IN_OUTPUT_FIELD_NUMBER: _ClassVar[int]
    N_FIELD_NUMBER: _ClassVar[int]
    SKIP_SPECIAL_TOKENS_FIELD_NUMBER: _ClassVar[int]
    STOP_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    include_stop_str_in_output: bool
    n: int
    skip_special_tokens: bool
    stop: _containers.RepeatedScalarFieldContainer[str]
    user: str
    def __init__(self, n: _Optional[int] = ..., stop: _Optional[_Iterable[str]] = ..., include_stop_str_in_output: bool = ..., skip_special_tokens: bool = ..., user: _Optional[str] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ["bytes", "created_unix_ms", "placements", "spec"]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    CREATED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    PLACEMENTS_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    bytes: int
    created_unix_ms: int
    placements: _containers.RepeatedCompositeFieldContainer[ModelPlacement]
    spec: ModelSpec
    def __init__(self, spec: _Optional[_Union[ModelSpec, _Mapping]] = ..., created_unix_ms: _Optional[int] = ..., bytes: _Optional[int] = ..., placements: _Optional[_Iterable[_Union[ModelPlacement, _Mapping]]] = ...) -> None: ...

class ModelPlacement(_message.Message):
    __slots__ = ["agent_id", "tier"]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    tier: _agent_pb2.Tier
    def __init__(self, agent_id: _Optional[str] = ..., tier: _Optional[_Union[_agent_pb2.Tier, str]] = ...) -> None: ...

class ModelSpec(_message.Message):
    __slots__ = ["id", "keep_alive_seconds", "launch_command", "max_model_len", "owned_by", "revision", "source"]
    ID_FIELD_NUMBER: _ClassVar[int]
    KEEP_ALIVE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    LAUNCH_COMMAND_FIELD_NUMBER: _ClassVar[int]
    MAX_MODEL_LEN_FIELD_NUMBER: _ClassVar[int]
    OWNED_BY_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    id: str
    keep_alive_seconds: int
    launch_command: _containers.RepeatedScalarFieldContainer[str]
    max_model_len: int
    owned_by: str
    revision: str
    source: str
    def __init__(self, id: _Optional[str] = ..., source: _Optional[str] = ..., revision: _Optional[str] = ..., keep_alive_seconds: _Optional[int] = ..., max_model_len: _Optional[int] = ..., launch_command: _Optional[_Iterable[str]] = ..., owned_by: _Optional[str] = ...) -> None: ...

class PlacementScore(_message.Message):
    __slots__ = ["agent_id", "cache_level", "cache_term", "chosen", "device", "eviction_bytes", "eviction_term", "fits_without_eviction", "ineligible_reason", "kv_hit_rate", "kv_term", "queue_length", "queue_term", "total", "transfer_seconds", "transfer_term", "wake_term", "wakes_device"]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    CACHE_LEVEL_FIELD_NUMBER: _ClassVar[int]
    CACHE_TERM_FIELD_NUMBER: _ClassVar[int]
    CHOSEN_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    EVICTION_BYTES_FIELD_NUMBER: _ClassVar[int]
    EVICTION_TERM_FIELD_NUMBER: _ClassVar[int]
    FITS_WITHOUT_EVICTION_FIELD_NUMBER: _ClassVar[int]
    INELIGIBLE_REASON_FIELD_NUMBER: _ClassVar[int]
    KV_HIT_RATE_FIELD_NUMBER: _ClassVar[int]
    KV_TERM_FIELD_NUMBER: _ClassVar[int]
    QUEUE_LENGTH_FIELD_NUMBER: _ClassVar[int]
    QUEUE_TERM_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    TRANSFER_SECONDS_FIELD_NUMBER: _ClassVar[int]
    TRANSFER_TERM_FIELD_NUMBER: _ClassVar[int]
    WAKES_DEVICE_FIELD_NUMBER: _ClassVar[int]
    WAKE_TERM_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    cache_level: int
    cache_term: float
    chosen: bool
    device: str
    eviction_bytes: int
    eviction_term: float
    fits_without_eviction: bool
    ineligible_reason: str
    kv_hit_rate: float
    kv_term: float
    queue_length: int
    queue_term: float
    total: float
    transfer_seconds: float
    transfer_term: float
    wake_term: float
    wakes_device: bool
    def __init__(self, agent_id: _Optional[str] = ..., cache_level: _Optional[int] = ..., kv_hit_rate: _Optional[float] = ..., queue_length: _Optional[int] = ..., transfer_seconds: _Optional[float] = ..., cache_term: _Optional[float] = ..., kv_term: _Optional[float] = ..., queue_term: _Optional[float] = ..., transfer_term: _Optional[float] = ..., total: _Optional[float] = ..., chosen: bool = ..., ineligible_reason: _Optional[str] = ..., fits_without_eviction: bool = ..., eviction_bytes: _Optional[int] = ..., eviction_term: _Optional[float] = ..., device: _Optional[str] = ..., wakes_device: bool = ..., wake_term: _Optional[float] = ...) -> None: ...

class CompletionFinishReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = []
