"""SDK functions that are not one generated function per op: compositions of opset ops, and
ops whose numpy signature the generator does not write (einsum's operands after its string)."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

from .graph import Operand, Var, emit, operand_list
from .ops import mean

__all__ = ["einsum", "global_avg_pool", "split"]


def einsum(subscripts: str, *operands: Operand) -> Var:
    """numpy einsum, with numpy's signature: `einsum("ij,jk->ik", a, b)`. Subscripts explicit,
    implicit ("ij,jk") or with "..." for leading axes; a letter repeated within an operand takes
    its diagonal ("ii->i"); the trace is "ii->" (op ``einsum``)."""
    if not isinstance(subscripts, str):
        raise TypeError(
            "einsum: the subscripts come first, as in numpy: einsum('ij,jk->ik', a, b), got "
            f"{type(subscripts).__name__}"
        )
    return emit("einsum", operand_list(operands, "einsum"), {"subscripts": subscripts})


def global_avg_pool(x: Var) -> Var:
    """The mean over the spatial axes of x (N, C, *S), kept as size 1 (ONNX GlobalAveragePool):
    `mean` over axes 2.. with keepdims."""
    if x.ndim is None or x.ndim < 3:
        shape = "[?]" if x.shape is None else list(x.shape)
        raise ValueError(f"global_avg_pool: x needs shape (N, C, *spatial), got {shape}")
    return mean(x, axis=tuple(range(2, x.ndim)), keepdims=True)


def split(x: Var, indices_or_sections: int | Sequence[int], axis: int = 0) -> list[Var]:
    """numpy split: `x` cut along `axis` into that many equal parts, or at those indices; each
    part is a slice of `x` (the ONNX converter's Split is the same slices)."""
    if x.ndim is None or not -x.ndim <= axis < x.ndim:
        raise ValueError(f"split: axis {axis} is out of range for x of shape {x.shape}")
    axis %= x.ndim
    size = x.shape[axis]  # type: ignore[index]
    if isinstance(indices_or_sections, int):
        parts = indices_or_sections
        if size < 0 or parts < 1 or size % parts:
            raise ValueError(
                f"split: axis {axis} of size {size} does not divide into {parts} equal parts"
            )
        bounds = [size // parts * i for i in range(parts + 1)]
    else:
        bounds = [0, *indices_or_sections, None]
    head = (slice(None),) * axis
    return [x[(*head, slice(a, b))] for a, b in pairwise(bounds)]
