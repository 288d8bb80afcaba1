"""Colouring a Jacobian's pattern so that one (co)tangent recovers many columns (rows) at once.

Two columns may share a colour when no row has an entry in both (a distance-2 colouring of the
column intersection graph, Curtis-Powell-Reid); rows likewise, on the transpose. Two colourings
are tried, both vectorised numpy (graph libraries were measured slower here: building a
rustworkx graph of 10^6 nodes from Python lists alone takes seconds, see docs/derivatives.md):
- the band colouring `j mod (w + 1)`, w the widest span of a row: O(nnz), and optimal for
  banded, diagonal and block-diagonal patterns, where it meets the lower bound (the most
  entries of any row);
- otherwise Jones-Plassmann greedy colouring: rounds in which every uncoloured column whose
  uncoloured neighbours all have lower priority takes the smallest colour its neighbours do not
  use; priorities are degree first (largest-first greedy), random among equals.

A symmetric pattern (a Hessian's) can do better: `star_colouring` gives its densest rows and
columns (hubs) a colour each and distance-2 colours the rest without them; an entry in a hub
row is read across the diagonal, from the hub's own column (h_ij = h_ji), so every entry is
still read where it is alone (direct recovery; Gebremedhin, Manne and Pothen, "What color is
your Jacobian?", 2005). An arrowhead Hessian takes 2 passes instead of n; a banded one keeps
the band colouring's 2b + 1.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from gradserve.autodiff.ir import Cancel, Cancelled

# Above this many entries of the intersection graph, greedy colouring is not tried.
MAX_GRAPH_ENTRIES = 1 << 25


def lower_bound(pattern: sp.csr_array) -> int:
    """No colouring of the columns has fewer colours than the most entries of one row."""
    return int(np.diff(pattern.indptr).max(initial=0))


def band_colouring(pattern: sp.csr_array) -> np.ndarray:
    n = pattern.shape[1]
    counts = np.diff(pattern.indptr)
    rows = counts > 0
    if not rows.any():
        return np.zeros(n, np.intp)
    starts = pattern.indptr[:-1][rows]
    first = pattern.indices[starts]  # column indices are sorted within each row
    last = pattern.indices[starts + counts[rows] - 1]
    width = int((last - first).max()) + 1
    return np.arange(n, dtype=np.intp) % width


def _intersection_graph(pattern: sp.csr_array) -> tuple[np.ndarray, np.ndarray]:
    """(source, target) of the edges between columns that share a row, both directions."""
    csc = sp.csr_array(pattern.T)
    graph = sp.coo_array(csc @ pattern)  # boolean: sums are logical ors, never wrap to 0
    off = graph.row != graph.col
    return graph.row[off].astype(np.intp), graph.col[off].astype(np.intp)


def greedy_colouring(pattern: sp.csr_array, seed: int = 0, cancel: Cancel = None) -> np.ndarray:
    n = pattern.shape[1]
    src, dst = _intersection_graph(pattern)
    degree = np.bincount(src, minlength=n)
    priority = degree.astype(np.int64) * n + np.random.default_rng(seed).permutation(n)
    colour = np.full(n, -1, np.intp)
    while src.size:
        if cancel is not None and cancel():
            raise Cancelled
        blocked = np.zeros(n, bool)
        waiting = colour[dst] < 0
        blocked[src[waiting & (priority[dst] > priority[src])]] = True
        ready = (colour < 0) & ~blocked
        # The smallest colour not used by a coloured neighbour: in each ready column's sorted,
        # distinct neighbour colours, the first position whose colour differs from it.
        used = ready[src] & ~waiting
        pairs = np.unique(src[used] * (n + 1) + colour[dst[used]])
        node, taken = pairs // (n + 1), pairs % (n + 1)
        starts = np.flatnonzero(np.diff(node, prepend=-1))
        rank = np.arange(node.size) - np.repeat(starts, np.diff(np.r_[starts, node.size]))
        smallest = np.zeros(n, np.intp)
        smallest[node[starts]] = np.diff(np.r_[starts, node.size])  # no gap: one past the last
        gaps = np.flatnonzero(taken != rank)
        gapped, first = np.unique(node[gaps], return_index=True)
        smallest[gapped] = rank[gaps[first]]
        colour[ready] = smallest[ready]
        keep = colour[src] < 0
        src, dst = src[keep], dst[keep]
    colour[colour < 0] = 0  # columns left without neighbours
    return colour


def colour_columns(pattern: sp.csr_array, cancel: Cancel = None) -> np.ndarray:
    """A colour per column such that no row has two entries of one colour."""
    band = band_colouring(pattern)
    counts = np.diff(pattern.indptr).astype(np.int64)
    if band.max(initial=-1) + 1 <= lower_bound(pattern) or (counts**2).sum() > MAX_GRAPH_ENTRIES:
        return band
    greedy = greedy_colouring(pattern, cancel=cancel)
    return greedy if greedy.max() < band.max() else band


def colour_rows(pattern: sp.csr_array, cancel: Cancel = None) -> np.ndarray:
    """A colour per row such that no column has two entries of one colour."""
    return colour_columns(sp.csr_array(pattern.T), cancel)


def star_colouring(pattern: sp.csr_array, cancel: Cancel = None) -> tuple[np.ndarray, np.ndarray]:
    """(a colour per column, which columns are hubs) of a symmetric pattern: the hubs have a
    colour each, the other columns a distance-2 colouring of the pattern without the hubs' rows
    and columns. Tried for hubs of more than maxdegree / 2, / 4, ... entries, down to 4 x the
    median; the fewest colours win (no hubs: the plain distance-2 colouring)."""
    n = pattern.shape[1]
    degree = np.diff(pattern.indptr)
    best, hubs = colour_columns(pattern, cancel), np.zeros(n, bool)
    floor = 4 * float(np.median(degree[degree > 0])) if pattern.nnz else 0.0
    threshold, tried = int(degree.max(initial=0)) // 2, set()
    while threshold >= max(floor, 2):
        candidate = degree > threshold
        k = int(candidate.sum())
        threshold //= 2
        if k in tried or k >= best.max(initial=-1) + 1:
            continue
        tried.add(k)
        rest = np.flatnonzero(~candidate)
        inner = colour_columns(sp.csr_array(pattern[rest][:, rest]), cancel)
        colours = np.empty(n, np.intp)
        colours[rest] = inner
        colours[candidate] = inner.max(initial=-1) + 1 + np.arange(k)
        if colours.max() < best.max():
            best, hubs = colours, candidate
    return best, hubs
