from thaw.agent.v1 import agent_pb2 as _agent_pb2
from thaw.checkpoint.v1 import checkpoint_pb2 as _checkpoint_pb2
from thaw.engine.v1 import engine_pb2 as _engine_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DownloadChunksRequest(_message.Message):
    __slots__ = ["file_names", "peers", "ref"]
    FILE_NAMES_FIELD_NUMBER: _ClassVar[int]
    PEERS_FIELD_NUMBER: _ClassVar[int]
    REF_FIELD_NUMBER: _ClassVar[int]
    file_names: _containers.RepeatedScalarFieldContainer[str]
    peers: _containers.RepeatedScalarFieldContainer[str]
    ref: _checkpoint_pb2.CheckpointRef
    def __init__(self, ref: _Optional[_Union[_checkpoint_pb2.CheckpointRef, _Mapping]] = ..., file_names: _Optional[_Iterable[str]] = ..., peers: _Optional[_Iterable[str]] = ...) -> None: ...

class DownloadChunksResponse(_message.Message):
    __slots__ = ["bytes_done", "bytes_total", "complete", "file_name", "source"]
    BYTES_DONE_FIELD_NUMBER: _ClassVar[int]
    BYTES_TOTAL_FIELD_NUMBER: _ClassVar[int]
    COMPLETE_FIELD_NUMBER: _ClassVar[int]
    FILE_NAME_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    bytes_done: int
    bytes_total: int
    complete: bool
    file_name: str
    source: str
    def __init__(self, file_name: _Optional[str] = ..., bytes_done: _Optional[int] = ..., bytes_total: _Optional[int] = ..., source: _Optional[str] = ..., complete: bool = ...) -> None: ...

class GetStatusRequest(_message.Message):
    __slots__ = []
    def __init__(self) -> None: ...

class GetStatusResponse(_message.Message):
    __slots__ = ["status"]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    status: _agent_pb2.AgentStatus
    def __init__(self, status: _Optional[_Union[_agent_pb2.AgentStatus, _Mapping]] = ...) -> None: ...

class InferRequest(_message.Message):
    __slots__ = ["chat", "echo", "include_stop_str_in_output", "ref", "request_id", "sampling", "skip_special_tokens", "stop", "text", "tokens"]
    CHAT_FIELD_NUMBER: _ClassVar[int]
    ECHO_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_STOP_STR_IN_OUTPUT_FIELD_NUMBER: _ClassVar[int]
    REF_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_FIELD_NUMBER: _ClassVar[int]
    SKIP_SPECIAL_TOKENS_FIELD_NUMBER: _ClassVar[int]
    STOP_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    chat: _agent_pb2.ChatPrompt
    echo: bool
    include_stop_str_in_output: bool
    ref: _checkpoint_pb2.CheckpointRef
    request_id: str
    sampling: _engine_pb2.SamplingParams
    skip_special_tokens: bool
    stop: _containers.RepeatedScalarFieldContainer[str]
    text: str
    tokens: _agent_pb2.TokenPrompt
    def __init__(self, ref: _Optional[_Union[_checkpoint_pb2.CheckpointRef, _Mapping]] = ..., chat: _Optional[_Union[_agent_pb2.ChatPrompt, _Mapping]] = ..., text: _Optional[str] = ..., tokens: _Optional[_Union[_agent_pb2.TokenPrompt, _Mapping]] = ..., sampling: _Optional[_Union[_engine_pb2.SamplingParams, _Mapping]] = ..., stop: _Optional[_Iterable[str]] = ..., include_stop_str_in_output: bool = ..., request_id: _Optional[str] = ..., echo: bool = ..., skip_special_tokens: bool = ...) -> None: ...

class InferResponse(_message.Message):
    __slots__ = ["finish_reason", "stop_reason", "text", "tokens", "usage"]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    STOP_REASON_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    finish_reason: _engine_pb2.FinishReason
    stop_reason: str
    text: str
    tokens: _containers.RepeatedCompositeFieldContainer[_agent_pb2.TokenOutput]
    usage: _agent_pb2.Usage
    def __init__(self, tokens: _Optional[_Iterable[_Union[_agent_pb2.TokenOutput, _Mapping]]] = ..., text: _Optional[str] = ..., finish_reason: _Optional[_Union[_engine_pb2.FinishReason, str]] = ..., usage: _Optional[_Union[_agent_pb2.Usage, _Mapping]] = ..., stop_reason: _Optional[str] = ...) -> None: ...

class LoadModelRequest(_message.Message):
    __slots__ = ["infer_follows", "launch_command", "max_model_len", "peers", "ref"]
    INFER_FOLLOWS_FIELD_NUMBER: _ClassVar[int]
    LAUNCH_COMMAND_FIELD_NUMBER: _ClassVar[int]
    MAX_MODEL_LEN_FIELD_NUMBER: _ClassVar[int]
    PEERS_FIELD_NUMBER: _ClassVar[int]
    REF_FIELD_NUMBER: _ClassVar[int]
    infer_follows: bool
    launch_command: _containers.RepeatedScalarFieldContainer[str]
    max_model_len: int
    peers: _containers.RepeatedScalarFieldContainer[str]
    ref: _checkpoint_pb2.CheckpointRef
    def __init__(self, ref: _Optional[_Union[_checkpoint_pb2.CheckpointRef, _Mapping]] = ..., peers: _Optional[_Iterable[str]] = ..., max_model_len: _Optional[int] = ..., launch_command: _Optional[_Iterable[str]] = ..., infer_follows: bool = ...) -> None: ...

class LoadModelResponse(_message.Message):
    __slots__ = ["bytes_done", "bytes_total", "device", "engine_id", "evicted", "ready", "seconds", "start_tier", "tier", "timings"]
    BYTES_DONE_FIELD_NUMBER: _ClassVar[int]
    BYTES_TOTAL_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    ENGINE_ID_FIELD_NUMBER: _ClassVar[int]
    EVICTED_FIELD_NUMBER: _ClassVar[int]
    READY_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    START_TIER_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    bytes_done: int
    bytes_total: int
    device: str
    engine_id: str
    evicted: _containers.RepeatedCompositeFieldContainer[_checkpoint_pb2.CheckpointRef]
    ready: bool
    seconds: float
    start_tier: _agent_pb2.Tier
    tier: _agent_pb2.Tier
    timings: _containers.RepeatedCompositeFieldContainer[_agent_pb2.TierTiming]
    def __init__(self, tier: _Optional[_Union[_agent_pb2.Tier, str]] = ..., bytes_done: _Optional[int] = ..., bytes_total: _Optional[int] = ..., timings: _Optional[_Iterable[_Union[_agent_pb2.TierTiming, _Mapping]]] = ..., ready: bool = ..., engine_id: _Optional[str] = ..., start_tier: _Optional[_Union[_agent_pb2.Tier, str]] = ..., seconds: _Optional[float] = ..., evicted: _Optional[_Iterable[_Union[_checkpoint_pb2.CheckpointRef, _Mapping]]] = ..., device: _Optional[str] = ...) -> None: ...

class ReadChunkRequest(_message.Message):
    __slots__ = ["file_name", "length", "offset", "ref"]
    FILE_NAME_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    REF_FIELD_NUMBER: _ClassVar[int]
    file_name: str
    length: int
    offset: int
    ref: _checkpoint_pb2.CheckpointRef
    def __init__(self, ref: _Optional[_Union[_checkpoint_pb2.CheckpointRef, _Mapping]] = ..., file_name: _Optional[str] = ..., offset: _Optional[int] = ..., length: _Optional[int] = ...) -> None: ...

class ReadChunkResponse(_message.Message):
    __slots__ = ["data", "file_length", "offset"]
    DATA_FIELD_NUMBER: _ClassVar[int]
    FILE_LENGTH_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    file_length: int
    offset: int
    def __init__(self, offset: _Optional[int] = ..., data: _Optional[bytes] = ..., file_length: _Optional[int] = ...) -> None: ...

class UnloadModelRequest(_message.Message):
    __slots__ = ["down_to", "ref"]
    DOWN_TO_FIELD_NUMBER: _ClassVar[int]
    REF_FIELD_NUMBER: _ClassVar[int]
    down_to: _agent_pb2.Tier
    ref: _checkpoint_pb2.CheckpointRef
    def __init__(self, ref: _Optional[_Union[_checkpoint_pb2.CheckpointRef, _Mapping]] = ..., down_to: _Optional[_Union[_agent_pb2.Tier, str]] = ...) -> None: ...

class UnloadModelResponse(_message.Message):
    __slots__ = ["unloaded"]
    UNLOADED_FIELD_NUMBER: _ClassVar[int]
    unloaded: bool
    def __init__(self, unloaded: bool = ...) -> None: ...
