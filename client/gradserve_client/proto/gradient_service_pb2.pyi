from . import graph_pb2 as _graph_pb2
from . import tensor_pb2 as _tensor_pb2
from . import training_pb2 as _training_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class JacobianMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JACOBIAN_MODE_UNSPECIFIED: _ClassVar[JacobianMode]
    JACOBIAN_MODE_AUTO: _ClassVar[JacobianMode]
    JACOBIAN_MODE_FORWARD: _ClassVar[JacobianMode]
    JACOBIAN_MODE_REVERSE: _ClassVar[JacobianMode]

class AttrKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ATTR_KIND_UNSPECIFIED: _ClassVar[AttrKind]
    ATTR_KIND_INT: _ClassVar[AttrKind]
    ATTR_KIND_FLOAT: _ClassVar[AttrKind]
    ATTR_KIND_INTS: _ClassVar[AttrKind]
    ATTR_KIND_FLOATS: _ClassVar[AttrKind]
    ATTR_KIND_STRING: _ClassVar[AttrKind]
    ATTR_KIND_TENSOR: _ClassVar[AttrKind]

class DerivativeKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DERIVATIVE_KIND_UNSPECIFIED: _ClassVar[DerivativeKind]
    DERIVATIVE_KIND_VJP: _ClassVar[DerivativeKind]
    DERIVATIVE_KIND_JVP: _ClassVar[DerivativeKind]
    DERIVATIVE_KIND_HVP: _ClassVar[DerivativeKind]
JACOBIAN_MODE_UNSPECIFIED: JacobianMode
JACOBIAN_MODE_AUTO: JacobianMode
JACOBIAN_MODE_FORWARD: JacobianMode
JACOBIAN_MODE_REVERSE: JacobianMode
ATTR_KIND_UNSPECIFIED: AttrKind
ATTR_KIND_INT: AttrKind
ATTR_KIND_FLOAT: AttrKind
ATTR_KIND_INTS: AttrKind
ATTR_KIND_FLOATS: AttrKind
ATTR_KIND_STRING: AttrKind
ATTR_KIND_TENSOR: AttrKind
DERIVATIVE_KIND_UNSPECIFIED: DerivativeKind
DERIVATIVE_KIND_VJP: DerivativeKind
DERIVATIVE_KIND_JVP: DerivativeKind
DERIVATIVE_KIND_HVP: DerivativeKind

class EvaluateRequest(_message.Message):
    __slots__ = ("graph", "graph_id", "onnx_model", "inputs", "outputs")
    class InputsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _tensor_pb2.Tensor
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ...) -> None: ...
    GRAPH_FIELD_NUMBER: _ClassVar[int]
    GRAPH_ID_FIELD_NUMBER: _ClassVar[int]
    ONNX_MODEL_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    graph: _graph_pb2.Graph
    graph_id: str
    onnx_model: bytes
    inputs: _containers.MessageMap[str, _tensor_pb2.Tensor]
    outputs: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, graph: _Optional[_Union[_graph_pb2.Graph, _Mapping]] = ..., graph_id: _Optional[str] = ..., onnx_model: _Optional[bytes] = ..., inputs: _Optional[_Mapping[str, _tensor_pb2.Tensor]] = ..., outputs: _Optional[_Iterable[str]] = ...) -> None: ...

class EvaluateResponse(_message.Message):
    __slots__ = ("graph_id", "outputs")
    class OutputsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _tensor_pb2.Tensor
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ...) -> None: ...
    GRAPH_ID_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    graph_id: str
    outputs: _containers.MessageMap[str, _tensor_pb2.Tensor]
    def __init__(self, graph_id: _Optional[str] = ..., outputs: _Optional[_Mapping[str, _tensor_pb2.Tensor]] = ...) -> None: ...

class JacobianRequest(_message.Message):
    __slots__ = ("graph", "graph_id", "onnx_model", "inputs", "of", "wrt", "mode", "structured", "part")
    class InputsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _tensor_pb2.Tensor
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ...) -> None: ...
    GRAPH_FIELD_NUMBER: _ClassVar[int]
    GRAPH_ID_FIELD_NUMBER: _ClassVar[int]
    ONNX_MODEL_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    OF_FIELD_NUMBER: _ClassVar[int]
    WRT_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    STRUCTURED_FIELD_NUMBER: _ClassVar[int]
    PART_FIELD_NUMBER: _ClassVar[int]
    graph: _graph_pb2.Graph
    graph_id: str
    onnx_model: bytes
    inputs: _containers.MessageMap[str, _tensor_pb2.Tensor]
    of: _containers.RepeatedScalarFieldContainer[str]
    wrt: _containers.RepeatedScalarFieldContainer[str]
    mode: JacobianMode
    structured: bool
    part: WorkPart
    def __init__(self, graph: _Optional[_Union[_graph_pb2.Graph, _Mapping]] = ..., graph_id: _Optional[str] = ..., onnx_model: _Optional[bytes] = ..., inputs: _Optional[_Mapping[str, _tensor_pb2.Tensor]] = ..., of: _Optional[_Iterable[str]] = ..., wrt: _Optional[_Iterable[str]] = ..., mode: _Optional[_Union[JacobianMode, str]] = ..., structured: _Optional[bool] = ..., part: _Optional[_Union[WorkPart, _Mapping]] = ...) -> None: ...

class WorkPart(_message.Message):
    __slots__ = ("index", "count")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    index: int
    count: int
    def __init__(self, index: _Optional[int] = ..., count: _Optional[int] = ...) -> None: ...

class JacobianResponse(_message.Message):
    __slots__ = ("graph_id", "blocks", "outputs")
    class OutputsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _tensor_pb2.Tensor
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ...) -> None: ...
    GRAPH_ID_FIELD_NUMBER: _ClassVar[int]
    BLOCKS_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    graph_id: str
    blocks: _containers.RepeatedCompositeFieldContainer[JacobianBlock]
    outputs: _containers.MessageMap[str, _tensor_pb2.Tensor]
    def __init__(self, graph_id: _Optional[str] = ..., blocks: _Optional[_Iterable[_Union[JacobianBlock, _Mapping]]] = ..., outputs: _Optional[_Mapping[str, _tensor_pb2.Tensor]] = ...) -> None: ...

class JacobianBlock(_message.Message):
    __slots__ = ("of", "wrt", "shape", "dense", "diagonal", "sparse")
    OF_FIELD_NUMBER: _ClassVar[int]
    WRT_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DENSE_FIELD_NUMBER: _ClassVar[int]
    DIAGONAL_FIELD_NUMBER: _ClassVar[int]
    SPARSE_FIELD_NUMBER: _ClassVar[int]
    of: str
    wrt: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    dense: _tensor_pb2.Tensor
    diagonal: _tensor_pb2.Tensor
    sparse: SparseMatrix
    def __init__(self, of: _Optional[str] = ..., wrt: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ..., dense: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ..., diagonal: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ..., sparse: _Optional[_Union[SparseMatrix, _Mapping]] = ...) -> None: ...

class SparseMatrix(_message.Message):
    __slots__ = ("rows", "cols", "indptr", "indices", "values")
    ROWS_FIELD_NUMBER: _ClassVar[int]
    COLS_FIELD_NUMBER: _ClassVar[int]
    INDPTR_FIELD_NUMBER: _ClassVar[int]
    INDICES_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    rows: int
    cols: int
    indptr: _tensor_pb2.Tensor
    indices: _tensor_pb2.Tensor
    values: _tensor_pb2.Tensor
    def __init__(self, rows: _Optional[int] = ..., cols: _Optional[int] = ..., indptr: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ..., indices: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ..., values: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ...) -> None: ...

class StreamJacobianRequest(_message.Message):
    __slots__ = ("graph", "graph_id", "onnx_model", "inputs", "of", "wrt", "mode", "rows_per_message", "structured")
    class InputsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _tensor_pb2.Tensor
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ...) -> None: ...
    GRAPH_FIELD_NUMBER: _ClassVar[int]
    GRAPH_ID_FIELD_NUMBER: _ClassVar[int]
    ONNX_MODEL_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    OF_FIELD_NUMBER: _ClassVar[int]
    WRT_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    ROWS_PER_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    STRUCTURED_FIELD_NUMBER: _ClassVar[int]
    graph: _graph_pb2.Graph
    graph_id: str
    onnx_model: bytes
    inputs: _containers.MessageMap[str, _tensor_pb2.Tensor]
    of: _containers.RepeatedScalarFieldContainer[str]
    wrt: _containers.RepeatedScalarFieldContainer[str]
    mode: JacobianMode
    rows_per_message: int
    structured: bool
    def __init__(self, graph: _Optional[_Union[_graph_pb2.Graph, _Mapping]] = ..., graph_id: _Optional[str] = ..., onnx_model: _Optional[bytes] = ..., inputs: _Optional[_Mapping[str, _tensor_pb2.Tensor]] = ..., of: _Optional[_Iterable[str]] = ..., wrt: _Optional[_Iterable[str]] = ..., mode: _Optional[_Union[JacobianMode, str]] = ..., rows_per_message: _Optional[int] = ..., structured: _Optional[bool] = ...) -> None: ...

class JacobianRowBlock(_message.Message):
    __slots__ = ("graph_id", "of", "wrt", "shape", "row_start", "row_count", "rows", "sparse")
    GRAPH_ID_FIELD_NUMBER: _ClassVar[int]
    OF_FIELD_NUMBER: _ClassVar[int]
    WRT_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    ROW_START_FIELD_NUMBER: _ClassVar[int]
    ROW_COUNT_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    SPARSE_FIELD_NUMBER: _ClassVar[int]
    graph_id: str
    of: str
    wrt: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    row_start: int
    row_count: int
    rows: _tensor_pb2.Tensor
    sparse: SparseMatrix
    def __init__(self, graph_id: _Optional[str] = ..., of: _Optional[str] = ..., wrt: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ..., row_start: _Optional[int] = ..., row_count: _Optional[int] = ..., rows: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ..., sparse: _Optional[_Union[SparseMatrix, _Mapping]] = ...) -> None: ...

class VjpRequest(_message.Message):
    __slots__ = ("graph", "graph_id", "onnx_model", "inputs", "cotangents", "wrt")
    class InputsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _tensor_pb2.Tensor
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ...) -> None: ...
    class CotangentsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _tensor_pb2.Tensor
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ...) -> None: ...
    GRAPH_FIELD_NUMBER: _ClassVar[int]
    GRAPH_ID_FIELD_NUMBER: _ClassVar[int]
    ONNX_MODEL_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    COTANGENTS_FIELD_NUMBER: _ClassVar[int]
    WRT_FIELD_NUMBER: _ClassVar[int]
    graph: _graph_pb2.Graph
    graph_id: str
    onnx_model: bytes
    inputs: _containers.MessageMap[str, _tensor_pb2.Tensor]
    cotangents: _containers.MessageMap[str, _tensor_pb2.Tensor]
    wrt: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, graph: _Optional[_Union[_graph_pb2.Graph, _Mapping]] = ..., graph_id: _Optional[str] = ..., onnx_model: _Optional[bytes] = ..., inputs: _Optional[_Mapping[str, _tensor_pb2.Tensor]] = ..., cotangents: _Optional[_Mapping[str, _tensor_pb2.Tensor]] = ..., wrt: _Optional[_Iterable[str]] = ...) -> None: ...

class VjpResponse(_message.Message):
    __slots__ = ("graph_id", "outputs", "gradients")
    class OutputsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _tensor_pb2.Tensor
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ...) -> None: ...
    class GradientsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _tensor_pb2.Tensor
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ...) -> None: ...
    GRAPH_ID_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    GRADIENTS_FIELD_NUMBER: _ClassVar[int]
    graph_id: str
    outputs: _containers.MessageMap[str, _tensor_pb2.Tensor]
    gradients: _containers.MessageMap[str, _tensor_pb2.Tensor]
    def __init__(self, graph_id: _Optional[str] = ..., outputs: _Optional[_Mapping[str, _tensor_pb2.Tensor]] = ..., gradients: _Optional[_Mapping[str, _tensor_pb2.Tensor]] = ...) -> None: ...

class JvpRequest(_message.Message):
    __slots__ = ("graph", "graph_id", "onnx_model", "inputs", "tangents", "of")
    class InputsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _tensor_pb2.Tensor
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ...) -> None: ...
    class TangentsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _tensor_pb2.Tensor
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ...) -> None: ...
    GRAPH_FIELD_NUMBER: _ClassVar[int]
    GRAPH_ID_FIELD_NUMBER: _ClassVar[int]
    ONNX_MODEL_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    TANGENTS_FIELD_NUMBER: _ClassVar[int]
    OF_FIELD_NUMBER: _ClassVar[int]
    graph: _graph_pb2.Graph
    graph_id: str
    onnx_model: bytes
    inputs: _containers.MessageMap[str, _tensor_pb2.Tensor]
    tangents: _containers.MessageMap[str, _tensor_pb2.Tensor]
    of: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, graph: _Optional[_Union[_graph_pb2.Graph, _Mapping]] = ..., graph_id: _Optional[str] = ..., onnx_model: _Optional[bytes] = ..., inputs: _Optional[_Mapping[str, _tensor_pb2.Tensor]] = ..., tangents: _Optional[_Mapping[str, _tensor_pb2.Tensor]] = ..., of: _Optional[_Iterable[str]] = ...) -> None: ...

class JvpResponse(_message.Message):
    __slots__ = ("graph_id", "outputs", "tangents")
    class OutputsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _tensor_pb2.Tensor
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ...) -> None: ...
    class TangentsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _tensor_pb2.Tensor
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ...) -> None: ...
    GRAPH_ID_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    TANGENTS_FIELD_NUMBER: _ClassVar[int]
    graph_id: str
    outputs: _containers.MessageMap[str, _tensor_pb2.Tensor]
    tangents: _containers.MessageMap[str, _tensor_pb2.Tensor]
    def __init__(self, graph_id: _Optional[str] = ..., outputs: _Optional[_Mapping[str, _tensor_pb2.Tensor]] = ..., tangents: _Optional[_Mapping[str, _tensor_pb2.Tensor]] = ...) -> None: ...

class ListOperatorsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListOperatorsResponse(_message.Message):
    __slots__ = ("operators", "opset")
    OPERATORS_FIELD_NUMBER: _ClassVar[int]
    OPSET_FIELD_NUMBER: _ClassVar[int]
    operators: _containers.RepeatedCompositeFieldContainer[OperatorInfo]
    opset: int
    def __init__(self, operators: _Optional[_Iterable[_Union[OperatorInfo, _Mapping]]] = ..., opset: _Optional[int] = ...) -> None: ...

class AttrInfo(_message.Message):
    __slots__ = ("name", "kind", "required", "default_value")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    REQUIRED_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_VALUE_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: AttrKind
    required: bool
    default_value: str
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[_Union[AttrKind, str]] = ..., required: _Optional[bool] = ..., default_value: _Optional[str] = ...) -> None: ...

class OperatorInfo(_message.Message):
    __slots__ = ("name", "arity", "attrs", "differentiable", "doc", "min_arity")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ARITY_FIELD_NUMBER: _ClassVar[int]
    ATTRS_FIELD_NUMBER: _ClassVar[int]
    DIFFERENTIABLE_FIELD_NUMBER: _ClassVar[int]
    DOC_FIELD_NUMBER: _ClassVar[int]
    MIN_ARITY_FIELD_NUMBER: _ClassVar[int]
    name: str
    arity: int
    attrs: _containers.RepeatedCompositeFieldContainer[AttrInfo]
    differentiable: bool
    doc: str
    min_arity: int
    def __init__(self, name: _Optional[str] = ..., arity: _Optional[int] = ..., attrs: _Optional[_Iterable[_Union[AttrInfo, _Mapping]]] = ..., differentiable: _Optional[bool] = ..., doc: _Optional[str] = ..., min_arity: _Optional[int] = ...) -> None: ...

class GetServerInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetServerInfoResponse(_message.Message):
    __slots__ = ("version", "opset", "limits", "features", "blas_threads", "process")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    OPSET_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    BLAS_THREADS_FIELD_NUMBER: _ClassVar[int]
    PROCESS_FIELD_NUMBER: _ClassVar[int]
    version: str
    opset: int
    limits: ServerLimits
    features: _containers.RepeatedScalarFieldContainer[str]
    blas_threads: int
    process: str
    def __init__(self, version: _Optional[str] = ..., opset: _Optional[int] = ..., limits: _Optional[_Union[ServerLimits, _Mapping]] = ..., features: _Optional[_Iterable[str]] = ..., blas_threads: _Optional[int] = ..., process: _Optional[str] = ...) -> None: ...

class ServerLimits(_message.Message):
    __slots__ = ("max_message_bytes", "max_graph_nodes", "max_tensor_elements", "max_jacobian_elements", "max_request_bytes", "max_stream_jacobian_elements")
    MAX_MESSAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_GRAPH_NODES_FIELD_NUMBER: _ClassVar[int]
    MAX_TENSOR_ELEMENTS_FIELD_NUMBER: _ClassVar[int]
    MAX_JACOBIAN_ELEMENTS_FIELD_NUMBER: _ClassVar[int]
    MAX_REQUEST_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_STREAM_JACOBIAN_ELEMENTS_FIELD_NUMBER: _ClassVar[int]
    max_message_bytes: int
    max_graph_nodes: int
    max_tensor_elements: int
    max_jacobian_elements: int
    max_request_bytes: int
    max_stream_jacobian_elements: int
    def __init__(self, max_message_bytes: _Optional[int] = ..., max_graph_nodes: _Optional[int] = ..., max_tensor_elements: _Optional[int] = ..., max_jacobian_elements: _Optional[int] = ..., max_request_bytes: _Optional[int] = ..., max_stream_jacobian_elements: _Optional[int] = ...) -> None: ...

class HessianRequest(_message.Message):
    __slots__ = ("graph", "graph_id", "inputs", "of", "wrt", "structured", "part")
    class InputsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _tensor_pb2.Tensor
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ...) -> None: ...
    GRAPH_FIELD_NUMBER: _ClassVar[int]
    GRAPH_ID_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    OF_FIELD_NUMBER: _ClassVar[int]
    WRT_FIELD_NUMBER: _ClassVar[int]
    STRUCTURED_FIELD_NUMBER: _ClassVar[int]
    PART_FIELD_NUMBER: _ClassVar[int]
    graph: _graph_pb2.Graph
    graph_id: str
    inputs: _containers.MessageMap[str, _tensor_pb2.Tensor]
    of: str
    wrt: _containers.RepeatedScalarFieldContainer[str]
    structured: bool
    part: WorkPart
    def __init__(self, graph: _Optional[_Union[_graph_pb2.Graph, _Mapping]] = ..., graph_id: _Optional[str] = ..., inputs: _Optional[_Mapping[str, _tensor_pb2.Tensor]] = ..., of: _Optional[str] = ..., wrt: _Optional[_Iterable[str]] = ..., structured: _Optional[bool] = ..., part: _Optional[_Union[WorkPart, _Mapping]] = ...) -> None: ...

class StreamHessianRequest(_message.Message):
    __slots__ = ("graph", "graph_id", "inputs", "of", "wrt", "structured", "rows_per_message")
    class InputsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _tensor_pb2.Tensor
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ...) -> None: ...
    GRAPH_FIELD_NUMBER: _ClassVar[int]
    GRAPH_ID_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    OF_FIELD_NUMBER: _ClassVar[int]
    WRT_FIELD_NUMBER: _ClassVar[int]
    STRUCTURED_FIELD_NUMBER: _ClassVar[int]
    ROWS_PER_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    graph: _graph_pb2.Graph
    graph_id: str
    inputs: _containers.MessageMap[str, _tensor_pb2.Tensor]
    of: str
    wrt: _containers.RepeatedScalarFieldContainer[str]
    structured: bool
    rows_per_message: int
    def __init__(self, graph: _Optional[_Union[_graph_pb2.Graph, _Mapping]] = ..., graph_id: _Optional[str] = ..., inputs: _Optional[_Mapping[str, _tensor_pb2.Tensor]] = ..., of: _Optional[str] = ..., wrt: _Optional[_Iterable[str]] = ..., structured: _Optional[bool] = ..., rows_per_message: _Optional[int] = ...) -> None: ...

class HessianResponse(_message.Message):
    __slots__ = ("graph_id", "blocks", "value")
    GRAPH_ID_FIELD_NUMBER: _ClassVar[int]
    BLOCKS_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    graph_id: str
    blocks: _containers.RepeatedCompositeFieldContainer[JacobianBlock]
    value: _tensor_pb2.Tensor
    def __init__(self, graph_id: _Optional[str] = ..., blocks: _Optional[_Iterable[_Union[JacobianBlock, _Mapping]]] = ..., value: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ...) -> None: ...

class HvpRequest(_message.Message):
    __slots__ = ("graph", "graph_id", "inputs", "of", "wrt", "vectors")
    class InputsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _tensor_pb2.Tensor
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ...) -> None: ...
    class VectorsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _tensor_pb2.Tensor
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ...) -> None: ...
    GRAPH_FIELD_NUMBER: _ClassVar[int]
    GRAPH_ID_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    OF_FIELD_NUMBER: _ClassVar[int]
    WRT_FIELD_NUMBER: _ClassVar[int]
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    graph: _graph_pb2.Graph
    graph_id: str
    inputs: _containers.MessageMap[str, _tensor_pb2.Tensor]
    of: str
    wrt: _containers.RepeatedScalarFieldContainer[str]
    vectors: _containers.MessageMap[str, _tensor_pb2.Tensor]
    def __init__(self, graph: _Optional[_Union[_graph_pb2.Graph, _Mapping]] = ..., graph_id: _Optional[str] = ..., inputs: _Optional[_Mapping[str, _tensor_pb2.Tensor]] = ..., of: _Optional[str] = ..., wrt: _Optional[_Iterable[str]] = ..., vectors: _Optional[_Mapping[str, _tensor_pb2.Tensor]] = ...) -> None: ...

class HvpResponse(_message.Message):
    __slots__ = ("graph_id", "products", "value")
    class ProductsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _tensor_pb2.Tensor
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ...) -> None: ...
    GRAPH_ID_FIELD_NUMBER: _ClassVar[int]
    PRODUCTS_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    graph_id: str
    products: _containers.MessageMap[str, _tensor_pb2.Tensor]
    value: _tensor_pb2.Tensor
    def __init__(self, graph_id: _Optional[str] = ..., products: _Optional[_Mapping[str, _tensor_pb2.Tensor]] = ..., value: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ...) -> None: ...

class JacobianSparsityRequest(_message.Message):
    __slots__ = ("graph", "graph_id", "inputs", "of", "wrt")
    class InputsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _tensor_pb2.Tensor
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ...) -> None: ...
    GRAPH_FIELD_NUMBER: _ClassVar[int]
    GRAPH_ID_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    OF_FIELD_NUMBER: _ClassVar[int]
    WRT_FIELD_NUMBER: _ClassVar[int]
    graph: _graph_pb2.Graph
    graph_id: str
    inputs: _containers.MessageMap[str, _tensor_pb2.Tensor]
    of: _containers.RepeatedScalarFieldContainer[str]
    wrt: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, graph: _Optional[_Union[_graph_pb2.Graph, _Mapping]] = ..., graph_id: _Optional[str] = ..., inputs: _Optional[_Mapping[str, _tensor_pb2.Tensor]] = ..., of: _Optional[_Iterable[str]] = ..., wrt: _Optional[_Iterable[str]] = ...) -> None: ...

class JacobianSparsityResponse(_message.Message):
    __slots__ = ("graph_id", "blocks")
    GRAPH_ID_FIELD_NUMBER: _ClassVar[int]
    BLOCKS_FIELD_NUMBER: _ClassVar[int]
    graph_id: str
    blocks: _containers.RepeatedCompositeFieldContainer[JacobianBlock]
    def __init__(self, graph_id: _Optional[str] = ..., blocks: _Optional[_Iterable[_Union[JacobianBlock, _Mapping]]] = ...) -> None: ...

class DerivativeProgramRequest(_message.Message):
    __slots__ = ("graph", "graph_id", "inputs", "of", "wrt", "kind")
    class InputsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _tensor_pb2.Tensor
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ...) -> None: ...
    GRAPH_FIELD_NUMBER: _ClassVar[int]
    GRAPH_ID_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    OF_FIELD_NUMBER: _ClassVar[int]
    WRT_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    graph: _graph_pb2.Graph
    graph_id: str
    inputs: _containers.MessageMap[str, _tensor_pb2.Tensor]
    of: _containers.RepeatedScalarFieldContainer[str]
    wrt: _containers.RepeatedScalarFieldContainer[str]
    kind: DerivativeKind
    def __init__(self, graph: _Optional[_Union[_graph_pb2.Graph, _Mapping]] = ..., graph_id: _Optional[str] = ..., inputs: _Optional[_Mapping[str, _tensor_pb2.Tensor]] = ..., of: _Optional[_Iterable[str]] = ..., wrt: _Optional[_Iterable[str]] = ..., kind: _Optional[_Union[DerivativeKind, str]] = ...) -> None: ...

class DerivativeProgramResponse(_message.Message):
    __slots__ = ("graph_id", "program")
    GRAPH_ID_FIELD_NUMBER: _ClassVar[int]
    PROGRAM_FIELD_NUMBER: _ClassVar[int]
    graph_id: str
    program: _graph_pb2.Graph
    def __init__(self, graph_id: _Optional[str] = ..., program: _Optional[_Union[_graph_pb2.Graph, _Mapping]] = ...) -> None: ...
