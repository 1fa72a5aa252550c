from thaw.checkpoint.v1 import checkpoint_pb2 as _checkpoint_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

CONVERT_PHASE_DONE: ConvertPhase
CONVERT_PHASE_DOWNLOADING: ConvertPhase
CONVERT_PHASE_PUBLISHING: ConvertPhase
CONVERT_PHASE_RESOLVING: ConvertPhase
CONVERT_PHASE_UNSPECIFIED: ConvertPhase
CONVERT_PHASE_WRITING: ConvertPhase
DESCRIPTOR: _descriptor.FileDescriptor

class ConvertRequest(_message.Message):
    __slots__ = ["chunk_size", "model_id", "overwrite", "revision", "source"]
    CHUNK_SIZE_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    OVERWRITE_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    chunk_size: int
    model_id: str
    overwrite: bool
    revision: str
    source: str
    def __init__(self, source: _Optional[str] = ..., revision: _Optional[str] = ..., model_id: _Optional[str] = ..., chunk_size: _Optional[int] = ..., overwrite: bool = ...) -> None: ...

class ConvertResponse(_message.Message):
    __slots__ = ["bytes_done", "bytes_total", "files_done", "files_total", "index", "message", "phase", "tensors_done", "tensors_total"]
    BYTES_DONE_FIELD_NUMBER: _ClassVar[int]
    BYTES_TOTAL_FIELD_NUMBER: _ClassVar[int]
    FILES_DONE_FIELD_NUMBER: _ClassVar[int]
    FILES_TOTAL_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    TENSORS_DONE_FIELD_NUMBER: _ClassVar[int]
    TENSORS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    bytes_done: int
    bytes_total: int
    files_done: int
    files_total: int
    index: _checkpoint_pb2.CheckpointIndex
    message: str
    phase: ConvertPhase
    tensors_done: int
    tensors_total: int
    def __init__(self, phase: _Optional[_Union[ConvertPhase, str]] = ..., files_done: _Optional[int] = ..., files_total: _Optional[int] = ..., bytes_done: _Optional[int] = ..., bytes_total: _Optional[int] = ..., tensors_done: _Optional[int] = ..., tensors_total: _Optional[int] = ..., message: _Optional[str] = ..., index: _Optional[_Union[_checkpoint_pb2.CheckpointIndex, _Mapping]] = ...) -> None: ...

class DeleteCheckpointRequest(_message.Message):
    __slots__ = ["ref"]
    REF_FIELD_NUMBER: _ClassVar[int]
    ref: _checkpoint_pb2.CheckpointRef
    def __init__(self, ref: _Optional[_Union[_checkpoint_pb2.CheckpointRef, _Mapping]] = ...) -> None: ...

class DeleteCheckpointResponse(_message.Message):
    __slots__ = ["bytes_freed"]
    BYTES_FREED_FIELD_NUMBER: _ClassVar[int]
    bytes_freed: int
    def __init__(self, bytes_freed: _Optional[int] = ...) -> None: ...

class GetCheckpointRequest(_message.Message):
    __slots__ = ["ref"]
    REF_FIELD_NUMBER: _ClassVar[int]
    ref: _checkpoint_pb2.CheckpointRef
    def __init__(self, ref: _Optional[_Union[_checkpoint_pb2.CheckpointRef, _Mapping]] = ...) -> None: ...

class GetCheckpointResponse(_message.Message):
    __slots__ = ["index"]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    index: _checkpoint_pb2.CheckpointIndex
    def __init__(self, index: _Optional[_Union[_checkpoint_pb2.CheckpointIndex, _Mapping]] = ...) -> None: ...

class ListCheckpointsRequest(_message.Message):
    __slots__ = ["model_id_prefix"]
    MODEL_ID_PREFIX_FIELD_NUMBER: _ClassVar[int]
    model_id_prefix: str
    def __init__(self, model_id_prefix: _Optional[str] = ...) -> None: ...

class ListCheckpointsResponse(_message.Message):
    __slots__ = ["checkpoints"]
    CHECKPOINTS_FIELD_NUMBER: _ClassVar[int]
    checkpoints: _containers.RepeatedCompositeFieldContainer[_checkpoint_pb2.CheckpointSummary]
    def __init__(self, checkpoints: _Optional[_Iterable[_Union[_checkpoint_pb2.CheckpointSummary, _Mapping]]] = ...) -> None: ...

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

class ConvertPhase(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = []
