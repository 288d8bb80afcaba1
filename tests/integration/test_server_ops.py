"""Every op of the registry through the wire: values and both Jacobian modes vs the core."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
from gradserve import autodiff
from gradserve.autodiff import GraphError, Program
from gradserve_client.proto import gradient_service_pb2 as pb
from wire import G, arrays, call_error, tensors

RNG = np.random.default_rng(7)


def _u(*shape, lo=0.2, hi=0.8):
    return RNG.uniform(lo, hi, size=shape)


WINDOW = {"kernel_shape": [2], "strides": [1], "pads": [1, 0], "dilations": [1]}
POOL = {"kernel_shape": [2], "strides": [2]}
POOLED = RNG.permutation(8).reshape(1, 2, 4) / 8  # distinct values: no ties
POOLED_MAX = POOLED.reshape(1, 2, 2, 2).max(-1)  # max_pool(POOLED, POOL)

# op -> (operands, attrs); operands are arrays fed as graph inputs a0, a1, ...
SPECIAL = {
    "arccosh": ([_u(2, 3, lo=1.5, hi=3.0)], {}),
    "where": ([np.array([[True, False, True], [False, True, False]]), _u(2, 3), _u(3)], {}),
    "constant": ([], {"value": np.arange(6.0).reshape(2, 3)}),
    "zeros": ([], {"shape": [2, 3]}),
    "sum_to": ([_u(2, 3)], {"shape": [3]}),
    "matmul": ([_u(2, 3), _u(3, 4)], {}),
    "dot": ([_u(2, 3), _u(3, 4)], {}),
    "outer": ([_u(3), _u(2)], {}),
    "prod_others": ([_u(2, 3)], {"axis": [1]}),
    "cross_entropy": ([_u(2, 3), np.array([2, 0])], {}),
    "cross_entropy_grad": ([_u(2, 3), np.array([2, 0])], {}),
    "one_hot": ([np.array([0, 2, 1])], {"depth": 4}),
    "mse": ([_u(2, 3), _u(2, 3)], {}),
    "reshape": ([_u(2, 3)], {"shape": [3, 2]}),
    "broadcast_to": ([_u(3)], {"shape": [2, 3]}),
    "transpose": ([_u(2, 3)], {}),
    "expand_dims": ([_u(2, 3)], {"axis": [0]}),
    "squeeze": ([_u(1, 3)], {}),
    "concatenate": ([_u(2, 3), _u(1, 3)], {"axis": 0}),
    "stack": ([_u(2, 3), _u(2, 3)], {"axis": 1}),
    "slice": ([_u(2, 4)], {"index": "1, 1:3"}),
    "slice_grad": ([_u(2)], {"index": "1:3", "shape": [4]}),
    "var": ([_u(2, 3)], {"axis": [1], "ddof": 1}),
    "clip": ([_u(2, 3), _u(3, lo=0.3, hi=0.4), np.array(0.6)], {}),
    "pad": ([_u(2, 3)], {"pads": [1, 2, 0, 1], "mode": "reflect"}),
    "pad_grad": ([_u(4, 5)], {"pads": [1, 0, 2, 1], "mode": "edge"}),
    "flip": ([_u(2, 3)], {"axis": [1]}),
    "tile": ([_u(2, 3)], {"reps": [2]}),
    "repeat": ([_u(2, 3)], {"repeats": 2, "axis": 0}),
    "cumsum": ([_u(2, 3)], {"axis": 1, "exclusive": 1}),
    "astype": ([_u(2, 3)], {"dtype": "float32"}),
    "argmax": ([_u(2, 3)], {"axis": 1}),
    "argmin": ([_u(2, 3)], {"axis": 0, "keepdims": 1}),
    "gelu": ([_u(2, 3, lo=-2, hi=2)], {"approximate": "tanh"}),
    "leaky_relu": ([_u(2, 3, lo=-1, hi=1)], {"alpha": 0.2}),
    "conv": ([_u(1, 2, 4), _u(3, 2, 2), _u(3)], {"pads": [1, 0]}),
    "conv_patches": (
        [_u(1, 2, 4)],
        WINDOW,
    ),
    "conv_patches_grad": ([_u(1, 2, 4, 2)], {**WINDOW, "shape": [4]}),
    "conv_input_grad": ([_u(1, 2, 4), _u(2, 3, 2)], {**WINDOW, "shape": [4]}),
    "conv_kernel_grad": ([_u(1, 3, 4), _u(1, 2, 4)], WINDOW),
    "max_pool": ([_u(1, 2, 4)], POOL),
    "max_pool_indices": ([_u(1, 2, 4)], POOL),
    "max_pool_pick": ([POOLED, POOLED_MAX, _u(1, 2, 4)], POOL),
    "max_pool_grad": ([POOLED, POOLED_MAX, _u(1, 2, 2)], POOL),
    "avg_pool": ([_u(1, 2, 5)], {"kernel_shape": [2], "ceil_mode": 1, "strides": [2]}),
    "take": ([_u(4, 2), np.array([3, 0, -1])], {}),
    "take_grad": ([_u(3, 2), np.array([3, 0, 3])], {"axis": -2, "size": 4}),
    "take_along_axis": ([_u(2, 3), np.array([[2, 0], [1, 1]])], {"axis": 1}),
    "take_along_axis_grad": ([_u(2, 2), np.array([[2, 0], [1, 1]])], {"axis": -1, "shape": [2, 3]}),
    "einsum": ([_u(2, 3), _u(3, 2)], {"subscripts": "ij,jk->ki"}),
    "layer_norm": ([_u(2, 3), _u(3), _u(3)], {}),
    "batch_norm": ([_u(2, 3), _u(3), _u(3), _u(3), _u(3)], {}),
}
REDUCTIONS = {"sum", "mean", "max", "min", "prod", "std", "logsumexp"}


def case(name: str):
    if name in SPECIAL:
        return SPECIAL[name]
    if name in REDUCTIONS:
        return [_u(2, 3)], {"axis": [1]}
    if name in ("softmax", "log_softmax"):
        return [_u(2, 3)], {}
    arity = autodiff.OPS[name].spec.max_arity
    assert arity in (1, 2), f"add a case for {name}"
    # element-wise: a (2, 3) operand, and for binaries a (3,) one that broadcasts
    return ([_u(2, 3)] if arity == 1 else [_u(2, 3), _u(3)]), {}


def op_graph(name: str, operands, attrs) -> G:
    names = [f"a{i}" for i in range(len(operands))]
    return G(
        inputs=[(n, a.dtype.name, list(a.shape)) for n, a in zip(names, operands, strict=True)],
        nodes=[("y", name, names, attrs)],
        outputs=["y"],
    )


@pytest.mark.parametrize("name", sorted(autodiff.OPS))
def test_op_through_the_wire(stub, name):
    operands, attrs = case(name)
    g = op_graph(name, operands, attrs)
    program = Program.build(g.graphdef())
    feed = {f"a{i}": a for i, a in enumerate(operands)}
    r = stub.Evaluate(pb.EvaluateRequest(graph=g.proto(), inputs=tensors(feed)))
    expected = autodiff.evaluate(program, feed)["y"]
    got = arrays(r.outputs)["y"]
    assert got.dtype == expected.dtype and got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)

    wrt = [i.name for i in program.inputs if program.types[i.name].is_float]
    if not wrt or not program.types["y"].is_float:
        return
    for mode, mode_name in ((pb.JACOBIAN_MODE_FORWARD, "forward"), (3, "reverse")):
        request = pb.JacobianRequest(graph_id=r.graph_id, inputs=tensors(feed), wrt=wrt, mode=mode)
        try:
            _, reference = autodiff.jacobian(program, feed, ["y"], wrt, mode_name)
        except GraphError as exc:  # an op without this rule: the server names the node
            err = call_error(stub.Jacobian, request)
            assert err.code == grpc.StatusCode.INVALID_ARGUMENT
            assert err.fields == [f'graph.nodes["y"].{exc.field}']
            continue
        j = stub.Jacobian(request)
        assert [(b.of, b.wrt) for b in j.blocks] == [("y", w) for w in wrt]
        for block in j.blocks:
            np.testing.assert_allclose(
                arrays({"d": block.dense})["d"],
                reference["y"][block.wrt],
                rtol=1e-10,
                atol=1e-12,
                err_msg=f"{name} d y / d {block.wrt}, mode {mode}",
            )
