"""HyperSpy signals from Main datasets and back.

rosettasciio's USID reader gives every file a signal-only ``BaseSignal``, keeps the columns in
file order (transposed when a file lists the fastest dimension first), drops non-uniform axes
and splits compound data. Here:

- positions become navigation axes and spectroscopic dimensions signal axes (``Signal1D`` for
  spectra, ``Signal2D`` for 2-D signals, the ``Complex`` classes for complex data); an image
  (two positions, every spectroscopic dimension of size 1) is a ``Signal2D`` whose signal axes
  are its positions; a position dimension of size 1 (one spectrum) is no axis;
- the axes are sorted slowest-varying first (NumPy C order) whatever the order of the ancillary
  columns;
- a dimension whose values are evenly spaced is a uniform axis (scale, offset), any other
  monotonic one keeps its values (a non-uniform axis); values that go back and forth (a piezo's
  approach and retract) cannot be a HyperSpy axis: the axis counts points and the values are in
  ``original_metadata.USID.unordered_axis_values``;
- quantity and units go to ``metadata.Signal.quantity`` as ``"Current (nA)"`` (HyperSpy's own
  convention; ``signal_type`` is left alone);
- compound data give one signal per field, titled with the field's name;
- positions that fill no grid (sparse sampling) are one navigation axis ``Position``;
  spectroscopic points that fill none are refused (a signal axis needs a grid).

``lazy=True`` builds a ``LazySignal`` on :meth:`MainDataset.to_dask`: nothing is read until
computed.
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, Any

import numpy as np

from ..core.errors import InvalidInput, MissingDependency, NotAGridError
from .dimension import Dimension
from .interop import slowest_first

if TYPE_CHECKING:
    from .dataset import MainDataset

#: Name of the navigation axis of positions that fill no grid.
FLAT_POSITION_AXIS = "Position"


def _hyperspy() -> Any:
    try:
        import hyperspy.api as hs
    except ImportError:
        raise MissingDependency("to_hyperspy/from_hyperspy need HyperSpy: pip install hyperspy") from None
    return hs


def axis_dict(dim: Dimension, navigate: bool) -> dict[str, Any]:
    """A HyperSpy axis description of one dimension: uniform when its values are evenly spaced."""
    values = np.asarray(dim.values, dtype=np.float64)
    entry: dict[str, Any] = {"name": dim.name, "units": dim.units or "", "navigate": navigate}
    if values.size < 2:
        return entry | {"size": int(values.size), "offset": float(values[0]) if values.size else 0.0, "scale": 1.0}
    step = np.diff(values)
    # USID stores values in float32 (pyUSID's VALUES_DTYPE): evenly spaced within its rounding
    rounding = 8 * float(np.finfo(np.float32).eps) * float(np.abs(values).max())
    if step[0] != 0 and np.allclose(step, step[0], rtol=1e-6, atol=rounding):
        scale = (values[-1] - values[0]) / (values.size - 1)  # the mean step: rounding averaged out
        return entry | {"size": int(values.size), "offset": float(values[0]), "scale": float(scale)}
    if np.all(step > 0) or np.all(step < 0):
        return entry | {"axis": values}
    # values that go back and forth (a piezo's approach and retract): HyperSpy's axes must be
    # ordered, so the axis counts points and the values go to original_metadata (to_hyperspy)
    return entry | {"size": int(values.size), "offset": 0.0, "scale": 1.0, "units": "", "unordered": values}


def _signal_class(hs: Any, n_signal_axes: int, complex_data: bool, lazy: bool) -> Any:
    names = {1: "Signal1D", 2: "Signal2D"}
    name = names.get(n_signal_axes, "BaseSignal")
    if complex_data:
        name = {"Signal1D": "ComplexSignal1D", "Signal2D": "ComplexSignal2D"}.get(name, "ComplexSignal")
    return getattr(hs.signals, name)


def to_hyperspy(main: MainDataset, lazy: bool = False) -> Any:
    """The Main dataset as a HyperSpy signal (a list of signals, one per field, for compound data).

    Parameters
    ----------
    main : MainDataset
    lazy : bool
        A ``LazySignal`` on :meth:`MainDataset.to_dask` instead of reading the values now.

    Raises
    ------
    NotAGridError
        The spectroscopic points fill no grid: HyperSpy's signal axes need one.
    MissingDependency
        HyperSpy is not installed.
    """
    hs = _hyperspy()
    if not main.spec_layout.is_grid:
        raise NotAGridError(
            f"{main.name}: its spectroscopic points do not fill a grid ({main.spec_layout.kind}); HyperSpy's "
            "signal axes need one: select a part that does (sel) and build the signal from it"
        )
    pos_grid = main.pos_layout.is_grid
    data, pos_dims, spec_dims = slowest_first(main, lazy)

    if pos_grid and any(d.size == 1 for d in pos_dims):  # one position along a dimension: no axis
        data = data.reshape(tuple(d.size for d in pos_dims if d.size > 1) + data.shape[len(pos_dims) :])
        pos_dims = [d for d in pos_dims if d.size > 1]
    image = pos_grid and len(pos_dims) == 2 and all(d.size == 1 for d in spec_dims)
    if image:  # an image: its positions are the signal
        data = data.reshape(data.shape[:2])
        axes = [axis_dict(d, navigate=False) for d in pos_dims]
    else:
        nav = [axis_dict(d, True) for d in pos_dims] if pos_grid else [_flat_axis(main)]
        axes = nav + [axis_dict(d, navigate=False) for d in spec_dims]
    unordered = {a["name"]: a.pop("unordered").tolist() for a in axes if "unordered" in a}
    n_signal = sum(not a["navigate"] for a in axes)
    fields = list(main.dtype.names or [])
    signals = []
    for field in fields or [None]:
        values = data[field] if field else data
        cls = _signal_class(hs, n_signal, np.iscomplexobj(values) if not lazy else values.dtype.kind == "c", lazy)
        signal = cls(values, axes=[dict(a) for a in axes])
        if lazy:
            signal = signal.as_lazy()
        title = field or main.name.rsplit("/", 1)[-1]
        signal.metadata.General.title = title
        signal.metadata.General.original_filename = os.path.basename(main.filename)
        signal.metadata.Signal.quantity = f"{main.quantity} ({main.units})" if main.units else main.quantity
        usid = {"file": os.path.basename(main.filename), "dataset": main.name, "quantity": main.quantity,
                "units": main.units}  # fmt: skip
        if field:
            usid["field"] = field
        if unordered:
            usid["unordered_axis_values"] = unordered
        signal.original_metadata.add_dictionary({"USID": usid})
        signals.append(signal)
    return signals if fields else signals[0]


def _flat_axis(main: MainDataset) -> dict[str, Any]:
    return {"name": FLAT_POSITION_AXIS, "units": "", "size": int(main.n_positions), "navigate": True}


#: ``"Current (nA)"`` → quantity, units (HyperSpy's ``metadata.Signal.quantity`` convention).
_QUANTITY = re.compile(r"^\s*(?P<quantity>.*?)\s*\((?P<units>[^()]*)\)\s*$")


def quantity_and_units(signal: Any) -> tuple[str, str]:
    """Quantity and units of a signal, from ``metadata.Signal.quantity`` (``"Current (nA)"``)."""
    text = signal.metadata.get_item("Signal.quantity", "") or ""
    found = _QUANTITY.match(str(text))
    if found:
        return found["quantity"] or "Signal", found["units"]
    title = signal.metadata.get_item("General.title", "") or ""
    return (str(text) or str(title) or "Signal"), "a.u."


def _dimension(axis: Any, index: int) -> Dimension:
    name = axis.name if isinstance(axis.name, str) and axis.name and axis.name != "<undefined>" else f"Dim_{index}"
    units = axis.units if isinstance(axis.units, str) and axis.units != "<undefined>" else ""
    return Dimension(name, units, np.asarray(axis.axis, dtype=np.float64))


def from_hyperspy(signal: Any, group: Any, name: str = "Raw_Data", **write_options: Any) -> MainDataset:
    """Write a HyperSpy signal as a USID Main dataset in ``group`` (returned, open in that file).

    Navigation axes become position dimensions and signal axes spectroscopic ones, slowest
    first; a signal without navigation axes is one image (its signal axes become positions, one
    spectroscopic point, as USID stores images) or one spectrum (one position). Axis values (uniform or not),
    names and units are kept; quantity and units come from ``metadata.Signal.quantity``. A lazy
    signal is written block by block.

    Parameters
    ----------
    signal : hyperspy BaseSignal
    group : h5py.Group
        Where to write (opened for writing).
    name : str
    **write_options
        Passed to :func:`usidgpu.write_main` (``compression=``, ``chunks=``…).
    """
    from .write import write_main

    if not hasattr(signal, "axes_manager"):
        raise InvalidInput(f"from_hyperspy takes a HyperSpy signal, got {type(signal).__name__}")
    axes = sorted(signal.axes_manager._axes, key=lambda a: a.index_in_array)  # noqa: SLF001 - array order
    dims = [_dimension(a, i) for i, a in enumerate(axes)]
    nav = [d for d, a in zip(dims, axes) if a.navigate]
    sig = [d for d, a in zip(dims, axes) if not a.navigate]
    if not nav and len(sig) == 2:  # one image: USID keeps its pixels as positions, one point each
        nav, sig = sig, [Dimension("arb", "a.u.", 1)]
    elif not nav:  # one spectrum (or signal): one position
        nav = [Dimension("Position", "a.u.", 1)]
    quantity, units = quantity_and_units(signal)
    data = signal.data
    shape = (int(np.prod([d.size for d in nav])), int(np.prod([d.size for d in sig])))
    return write_main(group, name, data.reshape(shape), quantity, units, nav, sig, **write_options)


__all__ = ["FLAT_POSITION_AXIS", "axis_dict", "from_hyperspy", "quantity_and_units", "to_hyperspy"]
