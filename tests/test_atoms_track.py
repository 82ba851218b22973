"""Column tracking against synthetic series with known identities, drift and individual motion."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import make_file
from scipy import ndimage

import usidgpu
from usidgpu import Dimension
from usidgpu.atoms.track import link, track

SPACING = 10.0


def series(n_frames=8, shape=(160, 160), step=(3.0, -2.0), step_jitter=0.3, jitter=0.1, wander=1.5, seed=0):
    """A square lattice seen through a drifting field of view.

    Columns enter and leave through the edges; 6 columns move on their own, wandering within
    ``wander`` px of their sites (up to 2 × ``wander`` px from frame to frame on top of the drift);
    4 vanish for good at frame 3, 2 vanish at frame 2 and come back at frame 4, and 5 sites empty
    so far get a column from frame 5 on.

    Returns per-frame positions, per-frame true column ids and the true cumulative drift.
    """
    rng = np.random.default_rng(seed)
    world_span = np.array(shape) + n_frames * np.abs(step).max() + 4 * SPACING
    ys, xs = np.meshgrid(
        np.arange(-world_span[0], world_span[0], SPACING), np.arange(-world_span[1], world_span[1], SPACING)
    )
    world = np.column_stack([ys.ravel(), xs.ravel()]) + [4.0, 6.0]
    n = len(world)
    steps = np.asarray(step) + rng.normal(0, step_jitter, (n_frames - 1, 2))
    drift = np.vstack([np.zeros(2), np.cumsum(steps, axis=0)])
    # Columns visible in frame 0, well inside: candidates for the special cases.
    centre = np.flatnonzero(np.all(np.abs(world + drift[n_frames // 2] - np.array(shape) / 2) < 50, axis=1))
    special = rng.choice(centre, size=17, replace=False)
    movers, vanish, blink, appear = special[:6], special[6:10], special[10:12], special[12:]
    own = np.zeros((n_frames, n, 2))
    angles = rng.uniform(0, 2 * np.pi, (n_frames, len(movers)))
    own[:, movers] = wander * np.stack([np.sin(angles), np.cos(angles)], -1)
    positions, truth = [], []
    for t in range(n_frames):
        p = world + drift[t] + own[t] + rng.normal(0, jitter, world.shape)
        present = np.all((p >= 0) & (p < np.array(shape) - 1), axis=1)
        if t >= 3:
            present[vanish] = False
        if 2 <= t < 4:
            present[blink] = False
        if t < 5:
            present[appear] = False
        ids = np.flatnonzero(present)
        order = rng.permutation(len(ids))  # the finder's order is arbitrary
        positions.append(p[ids[order]])
        truth.append(ids[order])
    return positions, truth, drift


def expected_segments(truth, memory=0):
    """Per frame, the key (true id, first frame of its run) that a correct tracker groups by; a
    run goes on across gaps of up to ``memory`` frames."""
    keys, start = [], {}
    for t, ids in enumerate(truth):
        previous = set().union(*truth[max(t - 1 - memory, 0) : t]) if t else set()
        frame = []
        for g in ids:
            if g not in previous:
                start[g] = t
            frame.append((int(g), start[g]))
        keys.append(frame)
    return keys


def assert_same_partition(tracks, truth, memory=0):
    """The tracks group exactly the (frame, column) pairs that the true runs group."""
    keys = expected_segments(truth, memory)
    to_key, to_track = {}, {}
    for t, (ids, frame_keys) in enumerate(zip(tracks.ids, keys)):
        assert len(ids) == len(frame_keys)
        for tid, key in zip(ids.tolist(), frame_keys):
            assert to_key.setdefault(tid, key) == key, f"frame {t}: track {tid} jumps from {to_key[tid]} to {key}"
            assert to_track.setdefault(key, tid) == tid, f"frame {t}: column run {key} split into tracks"
    assert tracks.n_tracks == len(to_key)


@pytest.mark.parametrize("method", ["assignment", "nearest"])
def test_link_identities_and_drift(method):
    positions, truth, drift = series()
    tracks = link(positions, max_displacement=0.4 * SPACING, method=method)
    assert_same_partition(tracks, truth)
    assert np.abs(tracks.drift - drift).max() < 0.05
    assert tracks.method == method and tracks.n_frames == len(positions)


@pytest.mark.parametrize("method", ["assignment", "nearest"])
def test_gap_closing_keeps_identities_across_missing_frames(method):
    """Two columns of the series are missing from frames 2 and 3: memory 2 bridges the gap,
    memory 1 does not (they come back as new tracks), and nothing else changes."""
    positions, truth, drift = series()
    blinking = set(truth[1]) & set(truth[4]) - set(truth[2]) - set(truth[3])
    assert len(blinking) == 2
    bridged = link(positions, 0.4 * SPACING, method=method, memory=2)
    assert_same_partition(bridged, truth, memory=2)
    assert bridged.memory == 2 and np.abs(bridged.drift - drift).max() < 0.05
    short = link(positions, 0.4 * SPACING, method=method, memory=1)
    assert_same_partition(short, truth, memory=0)
    assert bridged.n_tracks == short.n_tracks - 2


def test_gap_closing_across_an_empty_frame():
    a = np.array([[10.0, 10.0], [10.0, 20.0], [30.0, 15.0]])
    drift = np.array([1.0, -0.5])
    frames = [a, a + drift, np.zeros((0, 2)), a + 3 * drift, a[:2] + 4 * drift]
    tracks = link(frames, 3.0, memory=1)
    assert [ids.tolist() for ids in tracks.ids] == [[0, 1, 2], [0, 1, 2], [], [0, 1, 2], [0, 1]]
    np.testing.assert_allclose(tracks.drift[-1], 4 * drift, atol=1e-9)
    assert [ids.tolist() for ids in link(frames, 3.0).ids][3] == [3, 4, 5]  # no memory: new tracks


def test_link_gate_smaller_than_drift():
    """A 2 px gate with 3.6 px of drift per frame: only the drift correction brings columns in reach."""
    positions, truth, drift = series(step=(3.0, -2.0), step_jitter=0.2, wander=0.5, seed=4)
    assert np.linalg.norm(np.diff(drift, axis=0), axis=1).min() > 2 * 1.5
    tracks = link(positions, max_displacement=2.0)
    assert_same_partition(tracks, truth)
    assert np.abs(tracks.drift - drift).max() < 0.05
    undrifted = link([p - d for p, d in zip(positions, drift)], max_displacement=2.0)
    assert_same_partition(undrifted, truth)
    np.testing.assert_allclose(undrifted.drift, 0, atol=0.05)


def test_link_drift_guess_for_large_drift():
    """7 px/frame on a 10 px lattice aliases to −3 px from positions alone; a guess fixes it."""
    positions, truth, drift = series(n_frames=5, step=(7.0, 0.0), step_jitter=0.2, seed=1)
    guess = np.outer(np.arange(5), [7.0, 0.0])
    tracks = link(positions, 4.0, drift=guess)
    assert_same_partition(tracks, truth)
    assert np.abs(tracks.drift - drift).max() < 0.05


def test_table_and_trajectory():
    positions, truth, drift = series(n_frames=5, seed=2)
    tracks = link(positions, 4.0)
    assert tracks.table.shape == (sum(len(p) for p in positions), 4)
    for t, (ids, p) in enumerate(zip(tracks.ids, positions)):
        rows = tracks.table[tracks.table[:, 0] == t]
        np.testing.assert_array_equal(rows[:, 1], ids)
        np.testing.assert_array_equal(rows[:, 2:], p)
    tid = int(tracks.ids[0][0])
    traj = tracks.trajectory(tid)
    assert traj.shape[1] == 3 and np.all(np.diff(traj[:, 0]) == 1)
    # Corrected for drift, a column that does not move on its own stays put.
    steady = tracks.trajectory(tid, corrected=True)
    assert np.ptp(steady[:, 1:], axis=0).max() < 1.0
    with pytest.raises(ValueError, match="no trajectory"):
        tracks.trajectory(10**6)


def test_assignment_beats_greedy_on_a_conflict():
    """Greedy takes the closest pair and strands the other column; assignment links both."""
    before = np.array([[50.0, 0.0], [50.0, 3.0]])
    after = np.array([[50.0, 2.9], [50.0, 6.0]])
    best = link([before, after], 4.0, drift=np.zeros((2, 2)))
    greedy = link([before, after], 4.0, method="nearest", drift=np.zeros((2, 2)))
    assert best.ids[1].tolist() == [0, 1]
    assert greedy.ids[1].tolist() == [1, 2]


def test_empty_frames_and_single_frame():
    a = np.array([[10.0, 10.0], [10.0, 20.0]])
    tracks = link([a, np.zeros((0, 2)), a], 3.0)
    assert [ids.tolist() for ids in tracks.ids] == [[0, 1], [], [2, 3]]
    single = link([a], 3.0)
    assert single.n_tracks == 2 and single.drift.shape == (1, 2)


def render(positions, shape, sigma=1.6, peak=100.0, seed=0):
    """Gaussian columns on a noisy background."""
    y, x = np.mgrid[0 : shape[0], 0 : shape[1]].astype(float)
    image = np.full(shape, 5.0)
    for py, px in positions:
        lo_y, hi_y = int(max(py - 6, 0)), int(min(py + 7, shape[0]))
        lo_x, hi_x = int(max(px - 6, 0)), int(min(px + 7, shape[1]))
        image[lo_y:hi_y, lo_x:hi_x] += peak * np.exp(
            -((y[lo_y:hi_y, lo_x:hi_x] - py) ** 2 + (x[lo_y:hi_y, lo_x:hi_x] - px) ** 2) / (2 * sigma**2)
        )
    return image + np.random.default_rng(seed).normal(0, 2.0, shape)


def peaks(image, threshold=40.0):
    """A test-only column finder: local maxima above a threshold, refined by the three-point
    Gaussian estimator (a parabola through the log of the smoothed peak, per axis)."""
    smooth = ndimage.gaussian_filter(image - np.median(image), 1.0)
    is_peak = (smooth == ndimage.maximum_filter(smooth, size=5)) & (smooth > threshold)
    rows, cols = np.nonzero(is_peak)
    keep = (rows >= 1) & (rows < image.shape[0] - 1) & (cols >= 1) & (cols < image.shape[1] - 1)
    rows, cols = rows[keep], cols[keep]
    log = np.log(np.clip(smooth, 1e-3, None))

    def offset(minus, centre, plus):
        return 0.5 * (minus - plus) / (minus - 2 * centre + plus)

    dy = offset(log[rows - 1, cols], log[rows, cols], log[rows + 1, cols])
    dx = offset(log[rows, cols - 1], log[rows, cols], log[rows, cols + 1])
    return np.column_stack([rows + dy, cols + dx]).astype(float)


def truth_of(found, true_positions, true_ids):
    """True id of each found column (the nearest true column, which must be within 1 px)."""
    d = np.linalg.norm(found[:, None] - true_positions[None], axis=2)
    assert d.min(axis=1).max() < 1.0
    return true_ids[d.argmin(axis=1)]


@pytest.fixture(scope="module")
def image_series():
    positions, truth, drift = series(n_frames=5, shape=(96, 96), seed=3)
    stack = np.stack([render(p, (96, 96), seed=t) for t, p in enumerate(positions)]).astype(np.float32)
    return stack, positions, truth, drift


def test_track_images(image_series):
    stack, positions, truth, drift = image_series
    tracks = track(stack, locate=peaks)
    found_truth = [truth_of(f, p, g) for f, p, g in zip(tracks.positions, positions, truth)]
    assert_same_partition(tracks, found_truth)
    assert np.abs(tracks.drift - drift).max() < 0.1
    first = tracks.positions[0]
    nn = np.sort(np.linalg.norm(first[:, None] - first[None], axis=2), axis=1)[:, 1]
    assert tracks.max_displacement == pytest.approx(0.4 * np.median(nn))


def test_track_main_dataset_same_as_array(image_series, tmp_path):
    stack = image_series[0]
    n, h, w = stack.shape
    path = tmp_path / "series.h5"
    make_file(
        path,
        np.moveaxis(stack, 0, -1),
        pos=[Dimension("Y", "px", h), Dimension("X", "px", w)],
        spec=[Dimension("Frame", "", n)],
        quantity="Intensity",
        units="a. u.",
    )
    reference = track(stack, locate=peaks, threshold=40.0)
    with usidgpu.open(path) as f:
        main = f.main_datasets()[0]
        tracks = track(main, locate=peaks, threshold=40.0)
    assert [a.tolist() for a in tracks.ids] == [a.tolist() for a in reference.ids]
    np.testing.assert_allclose(tracks.drift, reference.drift)


@pytest.mark.parametrize(
    "args, kwargs, message",
    [
        (([], 3.0), {}, "at least one frame"),
        (([np.zeros((3, 3))], 3.0), {}, "frame 0"),
        (([np.zeros((3, 2)), [[1.0, np.nan]]], 3.0), {}, "frame 1.*NaN"),
        (([np.zeros((3, 2))], 0.0), {}, "positive"),
        (([np.zeros((3, 2))], float("nan")), {}, "positive"),
        (([np.zeros((3, 2))], 3.0), {"method": "hungarian"}, "method"),
        (([np.zeros((3, 2))] * 2, 3.0), {"drift": np.zeros((3, 2))}, r"\(2, 2\)"),
        (([np.zeros((3, 2))] * 2, 3.0), {"memory": -1}, "memory"),
        (([np.zeros((3, 2))] * 2, 3.0), {"memory": 1.5}, "memory"),
    ],
)
def test_link_bad_input(args, kwargs, message):
    with pytest.raises(ValueError, match=message):
        link(*args, **kwargs)


def test_track_bad_input():
    with pytest.raises(ValueError, match="expected an image"):
        track(np.zeros((2, 3, 4, 5)), locate=peaks)
    with pytest.raises(TypeError, match="real data"):
        track(np.zeros((2, 8, 8), complex), locate=peaks)
    bad = np.zeros((2, 8, 8))
    bad[1, 0, 0] = 1  # frame 1 differs, so a locate can fail on it alone
    with pytest.raises(ValueError, match="frame 0.*need at least 2"):
        track(np.zeros((2, 8, 8)), locate=lambda image: np.array([[4.0, 4.0]]))
    with pytest.raises(ValueError, match="frame 1"):
        track(bad, 2.0, locate=lambda image: np.zeros((2, 2)) if image.sum() == 0 else None)
    with pytest.raises(ValueError, match="frame 1.*shape"):
        track(bad, 2.0, locate=lambda image: np.zeros((2, 2)) if image.sum() == 0 else np.zeros((2, 3)))
