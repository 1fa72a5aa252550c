from thaw.checkpoint.v1 import checkpoint_pb2 as _checkpoint_pb2
from thaw.engine.v1 import engine_pb2 as _engine_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AllocateWeightsRequest(_message.Message):
    __slots__ = ["bytes", "model"]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    bytes: int
    model: str
    def __init__(self, bytes: _Optional[int] = ..., model: _Optional[str] = ...) -> None: ...

class AllocateWeightsResponse(_message.Message):
    __slots__ = ["allocation_id", "bytes", "device_index", "ipc_handle"]
    ALLOCATION_ID_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    DEVICE_INDEX_FIELD_NUMBER: _ClassVar[int]
    IPC_HANDLE_FIELD_NUMBER: _ClassVar[int]
    allocation_id: str
    bytes: int
    device_index: int
    ipc_handle: bytes
    def __init__(self, allocation_id: _Optional[str] = ..., ipc_handle: _Optional[bytes] = ..., device_index: _Optional[int] = ..., bytes: _Optional[int] = ...) -> None: ...

class GenerateRequest(_message.Message):
    __slots__ = ["model", "prompt_token_ids", "request_id", "sampling"]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_FIELD_NUMBER: _ClassVar[int]
    model: str
    prompt_token_ids: _containers.RepeatedScalarFieldContainer[int]
    request_id: str
    sampling: _engine_pb2.SamplingParams
    def __init__(self, request_id: _Optional[str] = ..., prompt_token_ids: _Optional[_Iterable[int]] = ..., sampling: _Optional[_Union[_engine_pb2.SamplingParams, _Mapping]] = ..., model: _Optional[str] = ...) -> None: ...

class GenerateResponse(_message.Message):
    __slots__ = ["cached_prompt_tokens", "finish_reason", "logprobs", "prompt_tokens", "token_ids"]
    CACHED_PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    LOGPROBS_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    cached_prompt_tokens: int
    finish_reason: _engine_pb2.FinishReason
    logprobs: _containers.RepeatedCompositeFieldContainer[_engine_pb2.PositionLogprobs]
    prompt_tokens: int
    token_ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, token_ids: _Optional[_Iterable[int]] = ..., logprobs: _Optional[_Iterable[_Union[_engine_pb2.PositionLogprobs, _Mapping]]] = ..., finish_reason: _Optional[_Union[_engine_pb2.FinishReason, str]] = ..., prompt_tokens: _Optional[int] = ..., cached_prompt_tokens: _Optional[int] = ...) -> None: ...

class GetStatsRequest(_message.Message):
    __slots__ = []
    def __init__(self) -> None: ...

class GetStatsResponse(_message.Message):
    __slots__ = ["device", "device_memory_total", "device_memory_used", "generated_tokens", "kv_blocks_total", "kv_blocks_used", "kv_page_bytes", "kv_pool_bytes", "model", "models", "pid", "prefix_hit_rate", "running", "waiting", "weights_budget_bytes"]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    DEVICE_MEMORY_TOTAL_FIELD_NUMBER: _ClassVar[int]
    DEVICE_MEMORY_USED_FIELD_NUMBER: _ClassVar[int]
    GENERATED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    KV_BLOCKS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    KV_BLOCKS_USED_FIELD_NUMBER: _ClassVar[int]
    KV_PAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    KV_POOL_BYTES_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    PREFIX_HIT_RATE_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    WAITING_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_BUDGET_BYTES_FIELD_NUMBER: _ClassVar[int]
    device: str
    device_memory_total: int
    device_memory_used: int
    generated_tokens: int
    kv_blocks_total: int
    kv_blocks_used: int
    kv_page_bytes: int
    kv_pool_bytes: int
    model: _checkpoint_pb2.CheckpointRef
    models: _containers.RepeatedCompositeFieldContainer[_engine_pb2.ModelStats]
    pid: int
    prefix_hit_rate: float
    running: int
    waiting: int
    weights_budget_bytes: int
    def __init__(self, model: _Optional[_Union[_checkpoint_pb2.CheckpointRef, _Mapping]] = ..., running: _Optional[int] = ..., waiting: _Optional[int] = ..., kv_blocks_total: _Optional[int] = ..., kv_blocks_used: _Optional[int] = ..., prefix_hit_rate: _Optional[float] = ..., device: _Optional[str] = ..., device_memory_used: _Optional[int] = ..., device_memory_total: _Optional[int] = ..., generated_tokens: _Optional[int] = ..., pid: _Optional[int] = ..., models: _Optional[_Iterable[_Union[_engine_pb2.ModelStats, _Mapping]]] = ..., kv_pool_bytes: _Optional[int] = ..., kv_page_bytes: _Optional[int] = ..., weights_budget_bytes: _Optional[int] = ...) -> None: ...

class LoadWeightsRequest(_message.Message):
    __slots__ = ["config_json", "dtype", "index", "kv_cache_bytes", "max_model_len", "memory", "model"]
    CONFIG_JSON_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    KV_CACHE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_MODEL_LEN_FIELD_NUMBER: _ClassVar[int]
    MEMORY_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    config_json: str
    dtype: str
    index: _checkpoint_pb2.CheckpointIndex
    kv_cache_bytes: int
    max_model_len: int
    memory: _engine_pb2.MemoryDescriptor
    model: str
    def __init__(self, index: _Optional[_Union[_checkpoint_pb2.CheckpointIndex, _Mapping]] = ..., memory: _Optional[_Union[_engine_pb2.MemoryDescriptor, _Mapping]] = ..., config_json: _Optional[str] = ..., dtype: _Optional[str] = ..., max_model_len: _Optional[int] = ..., kv_cache_bytes: _Optional[int] = ..., model: _Optional[str] = ...) -> None: ...

class LoadWeightsResponse(_message.Message):
    __slots__ = ["block_size", "device", "kv_blocks", "kv_blocks_floor", "max_model_len", "model", "seconds"]
    BLOCK_SIZE_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    KV_BLOCKS_FIELD_NUMBER: _ClassVar[int]
    KV_BLOCKS_FLOOR_FIELD_NUMBER: _ClassVar[int]
    MAX_MODEL_LEN_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    block_size: int
    device: str
    kv_blocks: int
    kv_blocks_floor: int
    max_model_len: int
    model: str
    seconds: float
    def __init__(self, seconds: _Optional[float] = ..., max_model_len: _Optional[int] = ..., kv_blocks: _Optional[int] = ..., block_size: _Optional[int] = ..., device: _Optional[str] = ..., model: _Optional[str] = ..., kv_blocks_floor: _Optional[int] = ...) -> None: ...

class UnloadRequest(_message.Message):
    __slots__ = ["model"]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: str
    def __init__(self, model: _Optional[str] = ...) -> None: ...

class UnloadResponse(_message.Message):
    __slots__ = ["bytes_freed"]
    BYTES_FREED_FIELD_NUMBER: _ClassVar[int]
    bytes_freed: int
    def __init__(self, bytes_freed: _Optional[int] = ...) -> None: ...
