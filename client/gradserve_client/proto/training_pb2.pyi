from . import graph_pb2 as _graph_pb2
from . import tensor_pb2 as _tensor_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TrainRequest(_message.Message):
    __slots__ = ("graph", "graph_id", "onnx_model", "loss", "params", "inline_data", "dataset_id", "batch_size", "epochs", "max_steps", "shuffle", "seed", "optimizer", "schedule", "report_every", "checkpoint_every", "resume_from", "report_interval_seconds")
    class ParamsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _tensor_pb2.Tensor
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ...) -> None: ...
    GRAPH_FIELD_NUMBER: _ClassVar[int]
    GRAPH_ID_FIELD_NUMBER: _ClassVar[int]
    ONNX_MODEL_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    INLINE_DATA_FIELD_NUMBER: _ClassVar[int]
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    MAX_STEPS_FIELD_NUMBER: _ClassVar[int]
    SHUFFLE_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    OPTIMIZER_FIELD_NUMBER: _ClassVar[int]
    SCHEDULE_FIELD_NUMBER: _ClassVar[int]
    REPORT_EVERY_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_EVERY_FIELD_NUMBER: _ClassVar[int]
    RESUME_FROM_FIELD_NUMBER: _ClassVar[int]
    REPORT_INTERVAL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    graph: _graph_pb2.Graph
    graph_id: str
    onnx_model: bytes
    loss: str
    params: _containers.MessageMap[str, _tensor_pb2.Tensor]
    inline_data: DataTensors
    dataset_id: str
    batch_size: int
    epochs: int
    max_steps: int
    shuffle: bool
    seed: int
    optimizer: Optimizer
    schedule: Schedule
    report_every: int
    checkpoint_every: int
    resume_from: Checkpoint
    report_interval_seconds: float
    def __init__(self, graph: _Optional[_Union[_graph_pb2.Graph, _Mapping]] = ..., graph_id: _Optional[str] = ..., onnx_model: _Optional[bytes] = ..., loss: _Optional[str] = ..., params: _Optional[_Mapping[str, _tensor_pb2.Tensor]] = ..., inline_data: _Optional[_Union[DataTensors, _Mapping]] = ..., dataset_id: _Optional[str] = ..., batch_size: _Optional[int] = ..., epochs: _Optional[int] = ..., max_steps: _Optional[int] = ..., shuffle: _Optional[bool] = ..., seed: _Optional[int] = ..., optimizer: _Optional[_Union[Optimizer, _Mapping]] = ..., schedule: _Optional[_Union[Schedule, _Mapping]] = ..., report_every: _Optional[int] = ..., checkpoint_every: _Optional[int] = ..., resume_from: _Optional[_Union[Checkpoint, _Mapping]] = ..., report_interval_seconds: _Optional[float] = ...) -> None: ...

class DataTensors(_message.Message):
    __slots__ = ("tensors",)
    class TensorsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _tensor_pb2.Tensor
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ...) -> None: ...
    TENSORS_FIELD_NUMBER: _ClassVar[int]
    tensors: _containers.MessageMap[str, _tensor_pb2.Tensor]
    def __init__(self, tensors: _Optional[_Mapping[str, _tensor_pb2.Tensor]] = ...) -> None: ...

class Optimizer(_message.Message):
    __slots__ = ("sgd", "adam")
    SGD_FIELD_NUMBER: _ClassVar[int]
    ADAM_FIELD_NUMBER: _ClassVar[int]
    sgd: Sgd
    adam: Adam
    def __init__(self, sgd: _Optional[_Union[Sgd, _Mapping]] = ..., adam: _Optional[_Union[Adam, _Mapping]] = ...) -> None: ...

class Sgd(_message.Message):
    __slots__ = ("lr", "momentum", "nesterov", "weight_decay", "dampening")
    LR_FIELD_NUMBER: _ClassVar[int]
    MOMENTUM_FIELD_NUMBER: _ClassVar[int]
    NESTEROV_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_DECAY_FIELD_NUMBER: _ClassVar[int]
    DAMPENING_FIELD_NUMBER: _ClassVar[int]
    lr: float
    momentum: float
    nesterov: bool
    weight_decay: float
    dampening: float
    def __init__(self, lr: _Optional[float] = ..., momentum: _Optional[float] = ..., nesterov: _Optional[bool] = ..., weight_decay: _Optional[float] = ..., dampening: _Optional[float] = ...) -> None: ...

class Adam(_message.Message):
    __slots__ = ("lr", "beta1", "beta2", "eps", "weight_decay")
    LR_FIELD_NUMBER: _ClassVar[int]
    BETA1_FIELD_NUMBER: _ClassVar[int]
    BETA2_FIELD_NUMBER: _ClassVar[int]
    EPS_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_DECAY_FIELD_NUMBER: _ClassVar[int]
    lr: float
    beta1: float
    beta2: float
    eps: float
    weight_decay: float
    def __init__(self, lr: _Optional[float] = ..., beta1: _Optional[float] = ..., beta2: _Optional[float] = ..., eps: _Optional[float] = ..., weight_decay: _Optional[float] = ...) -> None: ...

class Schedule(_message.Message):
    __slots__ = ("constant", "step", "cosine")
    CONSTANT_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    COSINE_FIELD_NUMBER: _ClassVar[int]
    constant: ConstantSchedule
    step: StepSchedule
    cosine: CosineSchedule
    def __init__(self, constant: _Optional[_Union[ConstantSchedule, _Mapping]] = ..., step: _Optional[_Union[StepSchedule, _Mapping]] = ..., cosine: _Optional[_Union[CosineSchedule, _Mapping]] = ...) -> None: ...

class ConstantSchedule(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StepSchedule(_message.Message):
    __slots__ = ("step_size", "gamma")
    STEP_SIZE_FIELD_NUMBER: _ClassVar[int]
    GAMMA_FIELD_NUMBER: _ClassVar[int]
    step_size: int
    gamma: float
    def __init__(self, step_size: _Optional[int] = ..., gamma: _Optional[float] = ...) -> None: ...

class CosineSchedule(_message.Message):
    __slots__ = ("t_max", "eta_min")
    T_MAX_FIELD_NUMBER: _ClassVar[int]
    ETA_MIN_FIELD_NUMBER: _ClassVar[int]
    t_max: int
    eta_min: float
    def __init__(self, t_max: _Optional[int] = ..., eta_min: _Optional[float] = ...) -> None: ...

class Checkpoint(_message.Message):
    __slots__ = ("graph_id", "step", "epoch", "cursor", "seed", "params", "optimizer_state", "fingerprint")
    class ParamsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _tensor_pb2.Tensor
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ...) -> None: ...
    class OptimizerStateEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _tensor_pb2.Tensor
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ...) -> None: ...
    GRAPH_ID_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    OPTIMIZER_STATE_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    graph_id: str
    step: int
    epoch: int
    cursor: int
    seed: int
    params: _containers.MessageMap[str, _tensor_pb2.Tensor]
    optimizer_state: _containers.MessageMap[str, _tensor_pb2.Tensor]
    fingerprint: bytes
    def __init__(self, graph_id: _Optional[str] = ..., step: _Optional[int] = ..., epoch: _Optional[int] = ..., cursor: _Optional[int] = ..., seed: _Optional[int] = ..., params: _Optional[_Mapping[str, _tensor_pb2.Tensor]] = ..., optimizer_state: _Optional[_Mapping[str, _tensor_pb2.Tensor]] = ..., fingerprint: _Optional[bytes] = ...) -> None: ...

class TrainEvent(_message.Message):
    __slots__ = ("step", "checkpoint", "result", "steps", "graph_id")
    STEP_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    GRAPH_ID_FIELD_NUMBER: _ClassVar[int]
    step: TrainStep
    checkpoint: Checkpoint
    result: TrainResult
    steps: TrainSteps
    graph_id: str
    def __init__(self, step: _Optional[_Union[TrainStep, _Mapping]] = ..., checkpoint: _Optional[_Union[Checkpoint, _Mapping]] = ..., result: _Optional[_Union[TrainResult, _Mapping]] = ..., steps: _Optional[_Union[TrainSteps, _Mapping]] = ..., graph_id: _Optional[str] = ...) -> None: ...

class TrainSteps(_message.Message):
    __slots__ = ("steps",)
    STEPS_FIELD_NUMBER: _ClassVar[int]
    steps: _containers.RepeatedCompositeFieldContainer[TrainStep]
    def __init__(self, steps: _Optional[_Iterable[_Union[TrainStep, _Mapping]]] = ...) -> None: ...

class TrainStep(_message.Message):
    __slots__ = ("step", "epoch", "loss", "grad_norm", "lr", "elapsed_seconds", "finite")
    STEP_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    GRAD_NORM_FIELD_NUMBER: _ClassVar[int]
    LR_FIELD_NUMBER: _ClassVar[int]
    ELAPSED_SECONDS_FIELD_NUMBER: _ClassVar[int]
    FINITE_FIELD_NUMBER: _ClassVar[int]
    step: int
    epoch: int
    loss: float
    grad_norm: float
    lr: float
    elapsed_seconds: float
    finite: bool
    def __init__(self, step: _Optional[int] = ..., epoch: _Optional[int] = ..., loss: _Optional[float] = ..., grad_norm: _Optional[float] = ..., lr: _Optional[float] = ..., elapsed_seconds: _Optional[float] = ..., finite: _Optional[bool] = ...) -> None: ...

class TrainResult(_message.Message):
    __slots__ = ("params", "steps", "final_loss", "elapsed_seconds")
    class ParamsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _tensor_pb2.Tensor
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ...) -> None: ...
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    FINAL_LOSS_FIELD_NUMBER: _ClassVar[int]
    ELAPSED_SECONDS_FIELD_NUMBER: _ClassVar[int]
    params: _containers.MessageMap[str, _tensor_pb2.Tensor]
    steps: int
    final_loss: float
    elapsed_seconds: float
    def __init__(self, params: _Optional[_Mapping[str, _tensor_pb2.Tensor]] = ..., steps: _Optional[int] = ..., final_loss: _Optional[float] = ..., elapsed_seconds: _Optional[float] = ...) -> None: ...

class DatasetChunk(_message.Message):
    __slots__ = ("name", "dtype", "shape", "data")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    name: str
    dtype: _tensor_pb2.DType
    shape: _containers.RepeatedScalarFieldContainer[int]
    data: bytes
    def __init__(self, name: _Optional[str] = ..., dtype: _Optional[_Union[_tensor_pb2.DType, str]] = ..., shape: _Optional[_Iterable[int]] = ..., data: _Optional[bytes] = ...) -> None: ...

class DatasetInfo(_message.Message):
    __slots__ = ("dataset_id", "num_examples", "arrays")
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    NUM_EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    ARRAYS_FIELD_NUMBER: _ClassVar[int]
    dataset_id: str
    num_examples: int
    arrays: _containers.RepeatedCompositeFieldContainer[_graph_pb2.InputSpec]
    def __init__(self, dataset_id: _Optional[str] = ..., num_examples: _Optional[int] = ..., arrays: _Optional[_Iterable[_Union[_graph_pb2.InputSpec, _Mapping]]] = ...) -> None: ...
