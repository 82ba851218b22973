"""``GIVBayesian``: the G-mode I–V Bayesian inference as a :class:`~usidgpu.parallel.Process`.

Input: a USID Main dataset positions × time samples holding the current, one period of the bias
waveform per row (pycroscopy's ``Reshaped_Data`` layout). Where the bias waveform comes from:

1. by default, the source's spectroscopic values, when it has a single spectroscopic dimension in
   volts (``V``) — the layout pycroscopy's G-mode translator writes and ``GIVBayesian`` reads;
2. otherwise ``bias=``: an array, or a name that is looked up as a dataset next to the source (an
   ancillary dataset, e.g. ``"Bias"``), then as a path in the file, then as an attribute of the
   source or of its groups.

The excitation frequency is ``frequency=`` or the first of the attributes
``excitation_frequency_[Hz]``, ``excitation_frequency``, ``frequency`` found on the source or its
groups (pycroscopy's G-mode files carry ``excitation_frequency_[Hz]`` on the channel group).

Results group ``<Source>-Bayesian_Inference_NNN``, every dataset a Main dataset on the source's
positions (float32):

``Resistance``, ``R_Std``
    R(V) posterior mean and standard deviation on the spectroscopic dimension ``Bias`` (V) of 2K
    values: the forward sweep's grid, then the reverse sweep's (descending), as pycroscopy.
``Capacitance``, ``C_Std``
    C and its posterior std per sweep, dimension ``Direction`` (0 = forward, 1 = reverse), in pF
    for a current in A/mA/µA/nA/pA. pycroscopy 0.60 stores twice this (the un-halved fit, ×1000)
    in a compound ``Forward``/``Reverse`` dataset; here it is the physical C, the value pycroscopy
    uses to correct the current.
``Reconstructed_Current``, ``Reconstructed_Current_No_C``, ``Corrected_Current``
    On the source's spectroscopic dimensions: ``A·μ`` (with the capacitive part), the resistive
    part alone, and pycroscopy's capacitance-compensated measured current.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

import numpy as np

from ..core.errors import InvalidInput
from ..parallel.process import Output, Process
from ..usid.dimension import Dimension
from .giv import GIVModel, GIVSettings

FREQUENCY_ATTRS = ("excitation_frequency_[Hz]", "excitation_frequency", "frequency")


def _walk_attrs(h5obj: Any):
    """The attributes of an HDF5 object and of each group above it, nearest first."""
    obj = h5obj
    while True:
        yield obj.attrs
        if obj.name == "/":
            return
        obj = obj.parent


def find_bias(source: Any, bias: Any = None) -> np.ndarray:
    """The bias waveform of ``source`` (see the module notes); raises ValueError naming what is missing."""
    n = source.shape[1]
    what = f"{source.name}"
    if bias is None:
        dims = source.spec_dims
        if len(dims) == 1 and dims[0].units.strip() == "V":
            return np.asarray(dims[0].values, dtype=np.float64)
        raise InvalidInput(
            f"{what}: no bias waveform: its spectroscopic dimension(s) "
            f"{[f'{d.name} ({d.units})' for d in dims]} are not one dimension in V; name it with bias="
        )
    if isinstance(bias, str):
        h5 = source.h5
        found = None
        for where in (h5.parent, h5.file):
            if bias in where and hasattr(where[bias], "shape"):
                found = np.asarray(where[bias][()], dtype=np.float64)
                break
        if found is None:
            for attrs in _walk_attrs(h5):
                if bias in attrs:
                    found = np.asarray(attrs[bias], dtype=np.float64)
                    break
        if found is None:
            raise InvalidInput(f"{what}: no dataset or attribute {bias!r} holds the bias waveform")
        bias = found
    v = np.asarray(bias, dtype=np.float64).ravel()
    if v.size != n:
        raise InvalidInput(f"{what}: the bias waveform has {v.size} points, the data {n} per position")
    return v


def find_frequency(source: Any, frequency: float | None = None) -> float:
    if frequency is not None:
        return float(frequency)
    for attrs in _walk_attrs(source.h5):
        for key in FREQUENCY_ATTRS:
            if key in attrs:
                return float(np.asarray(attrs[key]).ravel()[0])
    raise InvalidInput(
        f"{source.name}: the excitation frequency is unknown: give it (frequency=, or --frequency on the command "
        f"line; none of the attributes {', '.join(FREQUENCY_ATTRS)} is set on the dataset or its groups)"
    )


class GIVBayesian(Process):
    """Bayesian inference of R(V) and C on G-mode I–V data, every block of pixels at once.

    Parameters
    ----------
    source : MainDataset
        Positions × time samples (one bias period per row), current in nA (or other units).
    frequency : float, optional
        Excitation frequency in Hz (default: from the file's attributes).
    bias : array-like or str, optional
        The bias waveform (default: the spectroscopic values when they are in V).
    settings : GIVSettings, optional
        The model's parameters (default: pycroscopy 0.60's; see :class:`~usidgpu.bayes.giv.GIVSettings`).
    seed : int
        Seed of the posterior draws.
    **options
        Any field of :class:`~usidgpu.bayes.giv.GIVSettings` (``num_x_steps``, ``r_extra``,
        ``gam``, ``sigma``, ``sigma_c``, ``num_samples``), and the run options ``scheduler``,
        ``workers``, ``device``, ``budget``, ``output``, ``rows_per_block``, ``progress`` (see
        :class:`~usidgpu.parallel.Process`).
    """

    tool = "Bayesian_Inference"

    def __init__(
        self,
        source: Any,
        frequency: float | None = None,
        bias: Any = None,
        settings: GIVSettings | None = None,
        *,
        seed: int = 0,
        **options: Any,
    ) -> None:
        names = {f.name for f in fields(GIVSettings)}
        settings = GIVSettings.of(settings, **{k: v for k, v in options.items() if k in names})
        super().__init__(source, **{k: v for k, v in options.items() if k not in names})
        if np.dtype(source.dtype).kind not in "fiu":
            raise InvalidInput(f"{source.name}: G-mode current must be real numbers, not {source.dtype}")
        self.bias_arg = bias if bias is None or isinstance(bias, str) else np.asarray(bias, float).tolist()
        waveform = find_bias(source, bias)
        self.model = GIVModel(
            waveform, find_frequency(source, frequency), settings, seed=seed, current_units=source.units
        )
        self.current_units = source.units

    def parameters(self) -> dict[str, Any]:
        return dict(bias=self.bias_arg, **self.model.parameters())

    def outputs(self) -> dict[str, Output]:
        m = self.model
        grid = [Dimension("Bias", "V", m.grid)]
        direction = [Dimension("Direction", "", np.arange(2))]
        u = self.current_units
        return {
            "Resistance": Output(m.grid.size, "Resistance", m.r_units, np.float32, grid),
            "R_Std": Output(m.grid.size, "Resistance std", m.r_units, np.float32, grid),
            "Capacitance": Output(2, "Capacitance", m.c_units, np.float32, direction),
            "C_Std": Output(2, "Capacitance std", m.c_units, np.float32, direction),
            "Reconstructed_Current": Output(m.n_points, "Current", u, np.float32, "source"),
            "Reconstructed_Current_No_C": Output(m.n_points, "Current", u, np.float32, "source"),
            "Corrected_Current": Output(m.n_points, "Current", u, np.float32, "source"),
        }

    def plan_blocks(self) -> list[tuple[int, int]]:
        if self._rows_per_block:
            return super().plan_blocks()
        # the samples of 1/g are chunked inside a block; the block itself holds the data and
        # about 4 output rows of N points plus 4 of 2K, all float64
        from ..core.memory import memory_budget
        from ..core.stream import plan_blocks as plan_rows

        n_rows, n_cols = self.source_shape
        row_bytes = 8 * (6 * n_cols + 6 * self.model.grid.size)
        rows = plan_rows(n_rows, row_bytes, memory_budget(self.budget, self.device), n_buffers=1).rows_per_block
        rows = min(rows, 4096)
        return [(a, min(a + rows, n_rows)) for a in range(0, n_rows, rows)]

    def compute(self, block: Any, xp: Any) -> dict[str, Any]:
        r = self.model.infer(block, xp)
        return {
            "Resistance": r.resistance,
            "R_Std": r.resistance_std,
            "Capacitance": r.capacitance,
            "C_Std": r.capacitance_std,
            "Reconstructed_Current": r.current_fit,
            "Reconstructed_Current_No_C": r.current_resistive,
            "Corrected_Current": r.current_corrected,
        }

    def finalize(self, writer: Any) -> None:
        writer.group.attrs["algorithm_author"] = "Kody J. Law (model); usidgpu (batched)"
        writer.group.attrs["bias_grid_note"] = "Bias: forward sweep grid, then reverse sweep grid (descending)"
