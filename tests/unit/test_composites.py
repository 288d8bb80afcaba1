"""SDK functions composed of opset ops: `gs.split` against numpy.split, values and derivatives."""

from __future__ import annotations

import gradserve_client as gs
import numpy as np
import pytest

X = np.arange(24.0).reshape(2, 12) / 7


@pytest.mark.parametrize(("how", "axis"), [(3, 1), (2, 0), ([1, 5], 1), ([2, 9, 10], -1), ([0], 0)])
def test_split_gives_numpy_splits(how, axis) -> None:
    g = gs.Graph()
    x = g.input("x", shape=X.shape)
    parts = gs.split(x, how, axis=axis)
    for i, p in enumerate(parts):
        g.output(f"p{i}", p)
    got = gs.LocalClient().evaluate(g, {"x": X})
    expected = np.split(X, how, axis=axis)
    assert len(parts) == len(expected)
    for i, e in enumerate(expected):
        np.testing.assert_array_equal(got[f"p{i}"], e)
        assert parts[i].shape == e.shape


@pytest.mark.parametrize("mode", ["forward", "reverse"])
def test_split_parts_differentiate_as_slices(mode) -> None:
    g = gs.Graph()
    x = g.input("x", shape=X.shape)
    a, b, c = gs.split(x, 3, axis=1)
    g.output("y", a * c + 2 * b)
    jac = gs.LocalClient().jacobian(g, {"x": X}, of="y", wrt="x", mode=mode)
    expected = np.zeros((2, 4, 2, 12))
    for i in range(2):
        for j in range(4):
            expected[i, j, i, j] = X[i, 8 + j]  # d(a*c)/da = c
            expected[i, j, i, 8 + j] = X[i, j]  # d(a*c)/dc = a
            expected[i, j, i, 4 + j] = 2.0
    np.testing.assert_array_equal(jac, expected)


def test_split_refuses_what_numpy_refuses() -> None:
    g = gs.Graph()
    x = g.input("x", shape=(2, 5))
    with pytest.raises(ValueError, match="does not divide into 2 equal parts"):
        gs.split(x, 2, axis=1)
    with pytest.raises(ValueError, match="axis 2 is out of range"):
        gs.split(x, 1, axis=2)
    y = g.input("y", shape=(-1, 4))
    with pytest.raises(ValueError, match="size -1"):
        gs.split(y, 2, axis=0)
