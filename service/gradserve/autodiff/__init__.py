"""gradserve's numpy autodiff core. It knows nothing of gRPC or protobuf.

program = Program.build(GraphDef(inputs, nodes, outputs))
evaluate(program, {"x": x})                       # values
vjp_values(program, {"x": x}, {"y": ct}, ["x"])   # reverse mode
jvp_values(program, {"x": x}, {"x": t}, ["y"])    # forward mode
jacobian(program, {"x": x}, ["y"], ["x"])         # batched, chunked, coloured Jacobians
jacobian_sparsity(program, "y", "x")              # the structural pattern, as CSR
hessian(program, {"x": x}, "loss", ["x"])          # Hessians of a scalar (dense or sparse)
hvp(program, {"x": x}, "loss", ["x"], {"x": v})    # Hessian-vector products
"""

from gradserve.autodiff import ops as _ops  # noqa: F401  (registers every op)
from gradserve.autodiff.api import (
    Evaluation,
    check_inputs,
    evaluate,
    evaluation,
    jvp_values,
    value_and_grad,
    vjp_values,
)
from gradserve.autodiff.executor import compile_program
from gradserve.autodiff.hessian import hessian, hvp
from gradserve.autodiff.ir import (
    Cancelled,
    GraphDef,
    GraphError,
    InputDef,
    NodeDef,
    Program,
    TensorType,
)
from gradserve.autodiff.jacobian import jacobian, jacobian_rows
from gradserve.autodiff.registry import OPS, OPSET, OpDef
from gradserve.autodiff.sparsity import jacobian_sparsity
from gradserve.autodiff.transforms import Derivative, derivative_program, jvp, select, vjp

__all__ = [
    "OPS",
    "OPSET",
    "Cancelled",
    "Derivative",
    "Evaluation",
    "GraphDef",
    "GraphError",
    "InputDef",
    "NodeDef",
    "OpDef",
    "Program",
    "TensorType",
    "check_inputs",
    "compile_program",
    "derivative_program",
    "evaluate",
    "evaluation",
    "hessian",
    "hvp",
    "jacobian",
    "jacobian_rows",
    "jacobian_sparsity",
    "jvp",
    "jvp_values",
    "select",
    "value_and_grad",
    "vjp",
    "vjp_values",
]
