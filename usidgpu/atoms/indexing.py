"""Cell indices of columns found by walking from neighbour to neighbour.

:meth:`Lattice.nearest_sites` rounds each column's fractional coordinates against one global
lattice. A distorted scan (a line start compressed by 25 %, a frame whose row spacing drifts by
7 %) moves far columns by half a cell against any global lattice, and rounding then puts them in
the wrong cell. Between *neighbours* the distortion is small, so here each column gets its index
from a neighbour's: the neighbour difference is rounded to the nearest inter-site vector of the
lattice, and the indices are carried along the spanning tree of the neighbour graph that uses
the best-fitting differences first (a minimum spanning tree on the misfit). Distortion that
accumulates over the field thus never mis-indexes a column; a grain boundary or a wrong
detection breaks the graph (misfit above ``max_misfit``) instead of propagating an error.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import breadth_first_order, connected_components, minimum_spanning_tree
from scipy.spatial import cKDTree

from .lattice import Lattice, _check_positions

#: Neighbours per column in the graph (the first shell of a square or hexagonal lattice, and a bit).
NEIGHBOURS = 6
#: Only the shortest steps are walked — along a base vector (±a, ±b), or between sites at most
#: this many site separations apart: under a compression s, k steps look like about k·s steps
#: (three steps at s = 0.7 like two; two compressed steps and a step across like a diagonal), an
#: ambiguity that the shortest steps do not have.
SHELL = 1.05
#: Largest neighbour misfit |d − D| / |D| the walk trusts. Under a compression s two steps look
#: like one step with misfit |2s − 1| and one step has |s − 1|; at 0.25 a trusted step is never
#: ambiguous (|s − 1| ≤ 0.25 leaves |2s − 1| ≥ 0.5). More strongly distorted regions join once
#: the distortion is partly corrected (:func:`usidgpu.atoms.scan_distortion.fit_scan_distortion`
#: walks again on the corrected positions).
MAX_MISFIT = 0.25


def _steps(diffs: np.ndarray, lattice: Lattice) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For every difference and every motif site m1 it may start from: the cell step, the motif
    site it lands on and the relative misfit of the nearest inter-site vector (infinite when that
    vector is not one of the shortest steps, :data:`SHELL`).

    Returns arrays of shape (M, E, 2), (M, E) and (M, E).
    """
    inv = np.linalg.inv(lattice.vectors)
    offsets = lattice.motif @ lattice.vectors
    m = lattice.n_sites
    longest = SHELL * lattice.min_separation
    cells = np.zeros((m, len(diffs), 2), dtype=np.int64)
    target = np.zeros((m, len(diffs)), dtype=np.int64)
    misfit = np.full((m, len(diffs)), np.inf)
    for m1 in range(m):
        for m2 in range(m):
            delta = offsets[m2] - offsets[m1]
            cell = np.rint((diffs - delta) @ inv)
            ideal = cell @ lattice.vectors + delta
            length = np.maximum(np.hypot(ideal[:, 0], ideal[:, 1]), 1e-12)
            err = np.hypot(*(diffs - ideal).T) / length
            # a zero step onto the same site is no neighbour: a double detection
            err[(np.abs(cell).sum(axis=1) == 0) & (m1 == m2)] = np.inf
            basis_step = (np.abs(cell).sum(axis=1) == 1) & (m1 == m2)
            err[(length > longest) & ~basis_step] = np.inf
            better = err < misfit[m1]
            misfit[m1, better] = err[better]
            cells[m1, better] = cell[better]
            target[m1, better] = m2
    return cells, target, misfit


def walk_indices(
    positions: ArrayLike, lattice: Lattice, neighbours: int = NEIGHBOURS, max_misfit: float = MAX_MISFIT
) -> tuple[np.ndarray, np.ndarray]:
    """Cell indices (i, j, motif site) of every column, carried from neighbour to neighbour.

    Parameters
    ----------
    positions : array_like, (N, 2)
        Column positions (y, x) in pixels.
    lattice : Lattice
        Vectors and motif of the cell (a global fit is good enough: only neighbour differences
        are rounded against it).
    neighbours : int
        Neighbours per column in the graph.
    max_misfit : float
        Neighbour differences further than this fraction of the nearest inter-site vector from it
        are not walked along.

    Returns
    -------
    indices : ndarray of int, (N, 3)
        (i, j, m) of each column. The component of the graph that holds the column nearest the
        centroid is indexed from that column's nearest site; every other component from its own
        first column's nearest site, as :meth:`Lattice.nearest_sites` would.
    walked : ndarray of bool, (N,)
        True for the columns of the largest component (indexed by the walk, not by rounding).
    """
    pos = _check_positions(positions)
    n = len(pos)
    indices, _ = lattice.nearest_sites(pos)
    if n < 2:
        return indices, np.ones(n, dtype=bool)
    k = min(int(neighbours), n - 1)
    _, idx = cKDTree(pos).query(pos, k=k + 1)
    src = np.repeat(np.arange(n), k)
    dst = idx[:, 1:].ravel()
    cells, target, misfit = _steps(pos[dst] - pos[src], lattice)
    weight = misfit.min(axis=0)
    ok = np.isfinite(weight) & (weight <= max_misfit)
    # zero weights would vanish from a sparse graph: every kept edge weighs at least a little
    graph = coo_matrix((weight[ok] + 1e-9, (src[ok], dst[ok])), shape=(n, n)).tocsr()
    graph = graph.maximum(graph.T)
    tree = minimum_spanning_tree(graph)
    tree = tree.maximum(tree.T).tocsr()
    n_parts, part = connected_components(tree, directed=False)
    centre = int(np.argmin(np.sum((pos - pos.mean(axis=0)) ** 2, axis=1)))
    main = part[centre]
    for p in range(n_parts):
        members = np.flatnonzero(part == p)
        if len(members) < 2:
            continue
        root = centre if p == main else int(members[0])
        order, parent = breadth_first_order(tree, root, directed=False, return_predecessors=True)
        child = order[1:]
        up = parent[child]
        # every tree edge's step for every site its parent may sit on; then one pass down the tree
        steps, lands, _ = _steps(pos[child] - pos[up], lattice)
        for e, (v, u) in enumerate(zip(child, up)):
            m1 = indices[u, 2]
            indices[v, :2] = indices[u, :2] + steps[m1, e]
            indices[v, 2] = lands[m1, e]
    return indices, part == main
