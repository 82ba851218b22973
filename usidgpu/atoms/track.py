"""Tracking atomic columns through a series of frames: drift estimate, frame-to-frame linking.

Positions are (N, 2) float arrays of (y, x) = (row, column) in pixels, one array per frame.
Consecutive frames are linked in three steps:

1. the global drift between them is the median displacement of mutual nearest neighbours (the
   previous step's drift, or zero, as the first guess), estimated again once after shifting by
   that first estimate and keeping only pairs within ``max_displacement``;
2. columns are matched on drift-corrected distances, gated at ``max_displacement``: by optimal
   assignment (minimum total squared distance among the matchings with the most pairs,
   :func:`scipy.optimize.linear_sum_assignment` on each connected group of candidate pairs) or
   greedily by mutual nearest neighbours (shortest pairs first);
3. the step's drift is re-estimated as the median displacement of the matched pairs.

A column without a match leaves its trajectory open for ``memory`` frames (gap closing, as
trackpy's ``memory``): while it is missing — a blanked frame, a column the finder missed once —
its last position moved by the drift since then takes part in the matching of every later frame,
together with the previous frame's columns; one that reappears within the gate keeps its id.
Otherwise, and with the default ``memory=0``, an unmatched column ends its trajectory and a new
one starts a new trajectory. Drift per frame must stay below half the column spacing unless a
guess is given: the point set of a lattice repeats, so a larger shift is ambiguous from
positions alone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from ..core.errors import InvalidInput

#: Default gate as a fraction of the median nearest-neighbour distance of the first frame.
GATE_FRACTION = 0.4
METHODS = ("assignment", "nearest")


@dataclass
class Tracks:
    """Trajectories of columns through a series of frames (see :func:`link`).

    Attributes
    ----------
    ids : list of ndarray of int
        Per frame, the trajectory id of each column of that frame (same order as its
        positions). Ids count from 0 in order of first appearance.
    table : ndarray, (K, 4)
        One row per column and frame: frame, track_id, y, x (sorted by frame, then by the
        column's order within the frame).
    drift : ndarray, (n_frames, 2)
        Cumulative drift (dy, dx) of each frame relative to frame 0, in pixels.
    positions : list of ndarray
        The positions linked, per frame.
    max_displacement : float
        The gate used, in pixels (after drift correction).
    method : str
        "assignment" or "nearest".
    memory : int
        Frames a column could be missing and keep its trajectory (gap closing).
    """

    ids: list[np.ndarray]
    table: np.ndarray
    drift: np.ndarray
    positions: list[np.ndarray]
    max_displacement: float
    method: str
    memory: int = 0

    @property
    def n_frames(self) -> int:
        """Number of frames."""
        return len(self.ids)

    @property
    def n_tracks(self) -> int:
        """Number of trajectories."""
        return int(max((ids.max() + 1 for ids in self.ids if len(ids)), default=0))

    def trajectory(self, track_id: int, corrected: bool = False) -> np.ndarray:
        """The frames and positions of one trajectory.

        Parameters
        ----------
        track_id : int
        corrected : bool
            Subtract the cumulative drift, leaving the column's own motion.

        Returns
        -------
        ndarray, (K, 3)
            Rows (frame, y, x), by frame.

        Raises
        ------
        ValueError
            No trajectory has this id.
        """
        rows = self.table[self.table[:, 1] == track_id]
        if not len(rows):
            raise InvalidInput(f"no trajectory with id {track_id} (ids are 0..{self.n_tracks - 1})")
        out = rows[:, [0, 2, 3]].copy()
        if corrected:
            out[:, 1:] -= self.drift[out[:, 0].astype(int)]
        return out


def _check_frame(positions: ArrayLike, frame: int) -> np.ndarray:
    """One frame's positions as a float (N, 2) array, or a ValueError naming the frame."""
    try:
        arr = np.asarray(positions, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"frame {frame}: positions must be a numeric (N, 2) array: {exc}") from None
    if arr.size == 0:
        return arr.reshape(0, 2)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise InvalidInput(f"frame {frame}: positions must have shape (N, 2) with columns (y, x), got {arr.shape}")
    if not np.isfinite(arr).all():
        raise InvalidInput(f"frame {frame}: positions contain NaN or infinite values")
    return arr


def _mutual_drift(before: np.ndarray, after: np.ndarray, guess: np.ndarray, gate: float) -> np.ndarray | None:
    """Median displacement of mutual nearest neighbours of ``before + guess`` and ``after``."""
    if not len(before) or not len(after):
        return None
    moved = before + guess
    dist, j = cKDTree(after).query(moved)
    _, i = cKDTree(moved).query(after)
    keep = (i[j] == np.arange(len(before))) & (dist <= gate)
    if not keep.any():
        return None
    return np.median(after[j[keep]] - before[keep], axis=0)


def _candidate_pairs(moved: np.ndarray, after: np.ndarray, gate: float) -> tuple[np.ndarray, ...]:
    """All pairs (i, j, squared distance) closer than the gate."""
    pairs = cKDTree(moved).sparse_distance_matrix(cKDTree(after), gate, output_type="ndarray")
    return pairs["i"].astype(np.int64), pairs["j"].astype(np.int64), pairs["v"] ** 2


def _match_nearest(i: np.ndarray, j: np.ndarray, cost: np.ndarray) -> list[tuple[int, int]]:
    """Greedy matching, shortest pairs first: iterated mutual nearest neighbours."""
    used_i, used_j, out = set(), set(), []
    for k in np.lexsort((j, i, cost)):
        a, b = int(i[k]), int(j[k])
        if a not in used_i and b not in used_j:
            used_i.add(a)
            used_j.add(b)
            out.append((a, b))
    return out


def _match_assignment(i: np.ndarray, j: np.ndarray, cost: np.ndarray, n_before: int) -> list[tuple[int, int]]:
    """Optimal matching on each connected group of candidate pairs.

    Within a group, a pair outside the gate costs more than all gated pairs together, so the
    solver first maximises the number of pairs, then minimises their total squared distance.
    Groups are small when the gate is below half the spacing, so no dense N × N matrix is built.
    """
    if not len(i):
        return []
    n_after = int(j.max()) + 1
    graph = coo_matrix((np.ones(len(i)), (i, n_before + j)), shape=(n_before + n_after,) * 2)
    _, group = connected_components(graph, directed=False)
    edge_group = group[i]
    order = np.argsort(edge_group, kind="stable")
    bounds = np.flatnonzero(np.diff(edge_group[order])) + 1
    out = []
    for edges in np.split(order, bounds):
        if len(edges) == 1:
            out.append((int(i[edges[0]]), int(j[edges[0]])))
            continue
        rows, r_inv = np.unique(i[edges], return_inverse=True)
        cols, c_inv = np.unique(j[edges], return_inverse=True)
        big = (float(cost[edges].sum()) + 1.0) * 2.0
        matrix = np.full((len(rows), len(cols)), big)
        matrix[r_inv, c_inv] = cost[edges]
        r, c = linear_sum_assignment(matrix)
        real = matrix[r, c] < big
        out.extend((int(rows[a]), int(cols[b])) for a, b in zip(r[real], c[real]))
    return out


def link(
    positions_per_frame: Sequence[ArrayLike],
    max_displacement: float,
    method: str = "assignment",
    drift: ArrayLike | None = None,
    memory: int = 0,
) -> Tracks:
    """Link column positions frame to frame into trajectories, correcting global drift.

    Parameters
    ----------
    positions_per_frame : sequence of array_like, each (N_t, 2)
        Column positions (y, x) in pixels, one array per frame (an empty frame is allowed).
    max_displacement : float
        Largest distance in pixels a column may move between consecutive frames once the global
        drift is removed (the gate).
    method : {"assignment", "nearest"}
        Optimal assignment (:func:`scipy.optimize.linear_sum_assignment`) or greedy mutual
        nearest neighbours.
    drift : array_like, (n_frames, 2), optional
        A guess of the cumulative drift (e.g. from stage readings or image registration) when
        it exceeds half the column spacing per frame; refined from the positions.
    memory : int
        Gap closing: a column missing from up to this many consecutive frames keeps its
        trajectory when it reappears within the gate of its drift-corrected last position
        (0: no gap closing; a trajectory ends at its first missing frame).

    Returns
    -------
    Tracks

    Raises
    ------
    ValueError
        No frames, a frame not (N, 2), a non-positive gate, an unknown method, a drift guess of
        the wrong shape, a negative memory.
    """
    frames = [_check_frame(p, t) for t, p in enumerate(positions_per_frame)]
    if not frames:
        raise InvalidInput("positions_per_frame is empty: need at least one frame")
    gate = float(max_displacement)
    if not gate > 0 or not np.isfinite(gate):
        raise InvalidInput(f"max_displacement must be a positive number of pixels, got {max_displacement!r}")
    if method not in METHODS:
        raise InvalidInput(f"method must be one of {METHODS}, got {method!r}")
    if isinstance(memory, bool) or not isinstance(memory, (int, np.integer)) or memory < 0:
        raise InvalidInput(f"memory must be a whole number of frames >= 0, got {memory!r}")
    n = len(frames)
    if drift is not None:
        guess = np.asarray(drift, dtype=np.float64)
        if guess.shape != (n, 2):
            raise InvalidInput(f"drift must have shape ({n}, 2) (cumulative, one row per frame), got {guess.shape}")
        steps = np.diff(guess, axis=0)
    else:
        steps = None
    ids = [np.arange(len(frames[0]), dtype=np.int64)]
    next_id = len(frames[0])
    cumulative = np.zeros((n, 2))
    previous = np.zeros(2)
    # open trajectories missing from the latest frames: id, last position, frame of that position
    lost_ids, lost_pos, lost_frame = np.zeros(0, np.int64), np.zeros((0, 2)), np.zeros(0, np.int64)
    for t in range(1, n):
        # the previous frame's columns, then the missing ones where the drift has taken them by then
        before = np.concatenate([frames[t - 1], lost_pos + (cumulative[t - 1] - cumulative[lost_frame])])
        before_ids = np.concatenate([ids[t - 1], lost_ids])
        after = frames[t]
        start = steps[t - 1] if steps is not None else previous
        step = _mutual_drift(before, after, start, np.inf)
        step = start if step is None else step
        second = _mutual_drift(before, after, step, gate)
        step = step if second is None else second
        if len(before) and len(after):
            i, j, cost = _candidate_pairs(before + step, after, gate)
            pairs = _match_nearest(i, j, cost) if method == "nearest" else _match_assignment(i, j, cost, len(before))
        else:
            pairs = []
        current = np.full(len(after), -1, dtype=np.int64)
        matched = np.zeros(len(before), dtype=bool)
        if pairs:
            a, b = np.array(pairs).T
            current[b] = before_ids[a]
            matched[a] = True
            step = np.median(after[b] - before[a], axis=0)
        new = current < 0
        current[new] = next_id + np.arange(int(new.sum()))
        next_id += int(new.sum())
        ids.append(current)
        cumulative[t] = cumulative[t - 1] + step
        previous = step
        if memory:
            n_prev = len(frames[t - 1])
            just_lost = ~matched[:n_prev]
            # a candidate again at frame t + 1 if missing from at most `memory` frames by then
            still_lost = ~matched[n_prev:] & (t - lost_frame <= memory)
            lost_ids = np.concatenate([ids[t - 1][just_lost], lost_ids[still_lost]])
            lost_pos = np.concatenate([frames[t - 1][just_lost], lost_pos[still_lost]])
            lost_frame = np.concatenate([np.full(int(just_lost.sum()), t - 1), lost_frame[still_lost]])
    rows = [np.column_stack([np.full(len(p), t, dtype=float), ids[t].astype(float), p]) for t, p in enumerate(frames)]
    table = np.concatenate(rows) if rows else np.zeros((0, 4))
    return Tracks(ids, table, cumulative, frames, gate, method, int(memory))


def _default_locate(image: np.ndarray, **kwargs: Any) -> np.ndarray:
    """Columns found by :func:`usidgpu.atoms.find.find_columns` and refined by Gaussian fits."""
    from .find import find_columns
    from .fit import refine

    return refine(image, find_columns(image, **kwargs)).positions


def track(
    frames: Any,
    max_displacement: float | None = None,
    locate: Callable[..., ArrayLike] | None = None,
    method: str = "assignment",
    drift: ArrayLike | None = None,
    memory: int = 0,
    **locate_kw: Any,
) -> Tracks:
    """Find the columns in every frame of a series and link them into trajectories.

    Parameters
    ----------
    frames : ndarray (n_frames, H, W) or (H, W), or MainDataset
        The images. A Main dataset needs two position dimensions on a grid (the image); each
        spectroscopic point is a frame (as :func:`usidgpu.denoise.windowed.frames_of` reads it).
    max_displacement : float, optional
        Gate in pixels after drift correction; default 0.4 × the median nearest-neighbour
        distance of the columns of the first frame.
    locate : callable, optional
        ``locate(image, **locate_kw)`` → (N, 2) positions (y, x). Default: find the columns
        (:func:`usidgpu.atoms.find.find_columns`, given ``locate_kw``) and refine them by
        Gaussian fits (:func:`usidgpu.atoms.fit.refine`).
    method : {"assignment", "nearest"}
        See :func:`link`.
    drift : array_like, (n_frames, 2), optional
        Guess of the cumulative drift; see :func:`link`.
    memory : int
        Gap closing: frames a column may be missing and keep its trajectory; see :func:`link`.
    **locate_kw
        Passed to ``locate``.

    Returns
    -------
    Tracks

    Raises
    ------
    ValueError
        Not an image stack, ``locate`` not giving (N, 2) positions, fewer than 2 columns in the
        first frame when the gate is to be derived from it.
    """
    from ..usid.frames import frames_of

    stack, _ = frames_of(frames)
    finder = _default_locate if locate is None else locate
    positions = []
    for t, image in enumerate(stack):
        found = finder(image, **locate_kw)
        positions.append(_check_frame(getattr(found, "positions", found), t))
    if max_displacement is None:
        first = positions[0]
        if len(first) < 2:
            raise InvalidInput(
                f"frame 0 has {len(first)} column(s): need at least 2 to derive max_displacement; pass it explicitly"
            )
        dist, _ = cKDTree(first).query(first, k=2)
        max_displacement = GATE_FRACTION * float(np.median(dist[:, 1]))
    return link(positions, max_displacement, method=method, drift=drift, memory=memory)
