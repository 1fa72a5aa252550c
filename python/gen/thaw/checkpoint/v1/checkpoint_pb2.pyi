from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

CHECKSUM_ALGORITHM_CRC32C: ChecksumAlgorithm
CHECKSUM_ALGORITHM_UNSPECIFIED: ChecksumAlgorithm
CHECKSUM_ALGORITHM_XXH3_64: ChecksumAlgorithm
DESCRIPTOR: _descriptor.FileDescriptor
DTYPE_BF16: Dtype
DTYPE_BOOL: Dtype
DTYPE_F16: Dtype
DTYPE_F32: Dtype
DTYPE_F64: Dtype
DTYPE_F8_E4M3: Dtype
DTYPE_F8_E5M2: Dtype
DTYPE_I16: Dtype
DTYPE_I32: Dtype
DTYPE_I64: Dtype
DTYPE_I8: Dtype
DTYPE_U16: Dtype
DTYPE_U32: Dtype
DTYPE_U64: Dtype
DTYPE_U8: Dtype
DTYPE_UNSPECIFIED: Dtype
SCALE_GRANULARITY_BLOCK: ScaleGranularity
SCALE_GRANULARITY_CHANNEL: ScaleGranularity
SCALE_GRANULARITY_TENSOR: ScaleGranularity
SCALE_GRANULARITY_UNSPECIFIED: ScaleGranularity

class CheckpointIndex(_message.Message):
    __slots__ = ["alignment", "architecture", "chunk_size", "chunks", "created_unix_ms", "extra_files", "format_version", "metadata", "model_key", "quantization", "ref", "source", "tensors", "total_bytes"]
    class MetadataEntry(_message.Message):
        __slots__ = ["key", "value"]
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ALIGNMENT_FIELD_NUMBER: _ClassVar[int]
    ARCHITECTURE_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    CHUNK_SIZE_FIELD_NUMBER: _ClassVar[int]
    CREATED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    EXTRA_FILES_FIELD_NUMBER: _ClassVar[int]
    FORMAT_VERSION_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    MODEL_KEY_FIELD_NUMBER: _ClassVar[int]
    QUANTIZATION_FIELD_NUMBER: _ClassVar[int]
    REF_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    TENSORS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    alignment: int
    architecture: str
    chunk_size: int
    chunks: _containers.RepeatedCompositeFieldContainer[ChunkEntry]
    created_unix_ms: int
    extra_files: _containers.RepeatedCompositeFieldContainer[ExtraFile]
    format_version: int
    metadata: _containers.ScalarMap[str, str]
    model_key: str
    quantization: Quantization
    ref: CheckpointRef
    source: SourceInfo
    tensors: _containers.RepeatedCompositeFieldContainer[TensorEntry]
    total_bytes: int
    def __init__(self, format_version: _Optional[int] = ..., ref: _Optional[_Union[CheckpointRef, _Mapping]] = ..., model_key: _Optional[str] = ..., alignment: _Optional[int] = ..., chunk_size: _Optional[int] = ..., tensors: _Optional[_Iterable[_Union[TensorEntry, _Mapping]]] = ..., chunks: _Optional[_Iterable[_Union[ChunkEntry, _Mapping]]] = ..., total_bytes: _Optional[int] = ..., extra_files: _Optional[_Iterable[_Union[ExtraFile, _Mapping]]] = ..., source: _Optional[_Union[SourceInfo, _Mapping]] = ..., created_unix_ms: _Optional[int] = ..., architecture: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ..., quantization: _Optional[_Union[Quantization, _Mapping]] = ...) -> None: ...

class CheckpointRef(_message.Message):
    __slots__ = ["model_id", "revision"]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    revision: str
    def __init__(self, model_id: _Optional[str] = ..., revision: _Optional[str] = ...) -> None: ...

class CheckpointSummary(_message.Message):
    __slots__ = ["architecture", "chunk_count", "created_unix_ms", "model_key", "ref", "tensor_count", "total_bytes"]
    ARCHITECTURE_FIELD_NUMBER: _ClassVar[int]
    CHUNK_COUNT_FIELD_NUMBER: _ClassVar[int]
    CREATED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    MODEL_KEY_FIELD_NUMBER: _ClassVar[int]
    REF_FIELD_NUMBER: _ClassVar[int]
    TENSOR_COUNT_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    architecture: str
    chunk_count: int
    created_unix_ms: int
    model_key: str
    ref: CheckpointRef
    tensor_count: int
    total_bytes: int
    def __init__(self, ref: _Optional[_Union[CheckpointRef, _Mapping]] = ..., model_key: _Optional[str] = ..., total_bytes: _Optional[int] = ..., tensor_count: _Optional[int] = ..., chunk_count: _Optional[int] = ..., architecture: _Optional[str] = ..., created_unix_ms: _Optional[int] = ...) -> None: ...

class Checksum(_message.Message):
    __slots__ = ["algorithm", "value"]
    ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    algorithm: ChecksumAlgorithm
    value: int
    def __init__(self, algorithm: _Optional[_Union[ChecksumAlgorithm, str]] = ..., value: _Optional[int] = ...) -> None: ...

class ChunkEntry(_message.Message):
    __slots__ = ["byte_length", "checksum", "file_name"]
    BYTE_LENGTH_FIELD_NUMBER: _ClassVar[int]
    CHECKSUM_FIELD_NUMBER: _ClassVar[int]
    FILE_NAME_FIELD_NUMBER: _ClassVar[int]
    byte_length: int
    checksum: Checksum
    file_name: str
    def __init__(self, file_name: _Optional[str] = ..., byte_length: _Optional[int] = ..., checksum: _Optional[_Union[Checksum, _Mapping]] = ...) -> None: ...

class ExtraFile(_message.Message):
    __slots__ = ["name", "sha256", "size"]
    NAME_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    name: str
    sha256: str
    size: int
    def __init__(self, name: _Optional[str] = ..., size: _Optional[int] = ..., sha256: _Optional[str] = ...) -> None: ...

class Quantization(_message.Message):
    __slots__ = ["block_size", "granularity", "method", "quantized_bytes", "quantized_tensors", "weight_dtype"]
    BLOCK_SIZE_FIELD_NUMBER: _ClassVar[int]
    GRANULARITY_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    QUANTIZED_BYTES_FIELD_NUMBER: _ClassVar[int]
    QUANTIZED_TENSORS_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_DTYPE_FIELD_NUMBER: _ClassVar[int]
    block_size: _containers.RepeatedScalarFieldContainer[int]
    granularity: ScaleGranularity
    method: str
    quantized_bytes: int
    quantized_tensors: int
    weight_dtype: Dtype
    def __init__(self, method: _Optional[str] = ..., weight_dtype: _Optional[_Union[Dtype, str]] = ..., granularity: _Optional[_Union[ScaleGranularity, str]] = ..., block_size: _Optional[_Iterable[int]] = ..., quantized_tensors: _Optional[int] = ..., quantized_bytes: _Optional[int] = ...) -> None: ...

class SourceFile(_message.Message):
    __slots__ = ["name", "sha256", "size"]
    NAME_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    name: str
    sha256: str
    size: int
    def __init__(self, name: _Optional[str] = ..., size: _Optional[int] = ..., sha256: _Optional[str] = ...) -> None: ...

class SourceInfo(_message.Message):
    __slots__ = ["files", "location", "model_id", "revision"]
    FILES_FIELD_NUMBER: _ClassVar[int]
    LOCATION_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    files: _containers.RepeatedCompositeFieldContainer[SourceFile]
    location: str
    model_id: str
    revision: str
    def __init__(self, model_id: _Optional[str] = ..., revision: _Optional[str] = ..., location: _Optional[str] = ..., files: _Optional[_Iterable[_Union[SourceFile, _Mapping]]] = ...) -> None: ...

class TensorEntry(_message.Message):
    __slots__ = ["aliases", "byte_length", "chunk", "dtype", "name", "offset", "shape"]
    ALIASES_FIELD_NUMBER: _ClassVar[int]
    BYTE_LENGTH_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    aliases: _containers.RepeatedScalarFieldContainer[str]
    byte_length: int
    chunk: int
    dtype: Dtype
    name: str
    offset: int
    shape: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, name: _Optional[str] = ..., dtype: _Optional[_Union[Dtype, str]] = ..., shape: _Optional[_Iterable[int]] = ..., chunk: _Optional[int] = ..., offset: _Optional[int] = ..., byte_length: _Optional[int] = ..., aliases: _Optional[_Iterable[str]] = ...) -> None: ...

class Dtype(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = []

class ChecksumAlgorithm(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = []

class ScaleGranularity(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = []
