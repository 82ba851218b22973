"""The :class:`Dimension` of a USID dataset: a name, its units and the values it took."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..core.errors import InvalidInput, InvalidType


@dataclass(frozen=True, eq=False)
class Dimension:
    """One position or spectroscopic dimension of a USID Main dataset.

    Parameters
    ----------
    name : str
        Label, e.g. ``"X"`` or ``"Bias"``. Unicode is fine.
    units : str
        Units, e.g. ``"nm"``, ``"µm"``, ``"Å"`` or ``""`` for dimensionless. Surrounding whitespace
        is stripped (some translators wrote ``" m\\n"``).
    values : int or array-like
        The values the dimension took, in acquisition order. An integer ``n`` means
        ``arange(n)``.
    incomplete : bool, optional
        True for the sparse-sampling layout of USID (pyUSID's ``DimType.INCOMPLETE``): every
        incomplete dimension lists one value per measured position instead of a grid axis.

    Examples
    --------
    >>> Dimension("Bias", "V", np.linspace(-1, 1, 5))
    Dimension('Bias', 'V', 5 values: -1 … 1)
    """

    name: str
    units: str
    values: Any = field(repr=False)  # an int or array-like in; a 1-D ndarray once made
    incomplete: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise InvalidInput(f"a Dimension needs a non-empty name, got {self.name!r}")
        if not isinstance(self.units, str):
            raise InvalidType(f"units of Dimension {self.name!r} must be a string, got {self.units!r}")
        values = self.values
        if isinstance(values, (int, np.integer)) and not isinstance(values, bool):
            if values < 1:
                raise InvalidInput(f"Dimension {self.name!r} needs at least one value, got {values}")
            values = np.arange(int(values))
        values = np.asarray(values)
        if values.ndim != 1 or values.size == 0:
            raise InvalidInput(
                f"values of Dimension {self.name!r} must be a non-empty 1-D array, got shape {values.shape}"
            )
        if not (np.issubdtype(values.dtype, np.number) or values.dtype == bool):
            raise InvalidType(f"values of Dimension {self.name!r} must be numeric, got {values.dtype}")
        values = values.copy()
        values.flags.writeable = False
        object.__setattr__(self, "name", self.name.strip())
        object.__setattr__(self, "units", self.units.strip())
        object.__setattr__(self, "values", values)

    @property
    def size(self) -> int:
        """Number of values."""
        return int(self.values.size)

    def __len__(self) -> int:
        return self.size

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Dimension):
            return NotImplemented
        return (
            self.name == other.name
            and self.units == other.units
            and self.incomplete == other.incomplete
            and self.values.shape == other.values.shape
            and bool(np.allclose(self.values, other.values, rtol=1e-6, atol=0, equal_nan=True))
        )

    __hash__ = None  # mutable-looking contents; compare with ==

    def __repr__(self) -> str:
        v = self.values
        span = f"{v[0]:g}" if v.size == 1 else f"{v[0]:g} … {v[-1]:g}"
        extra = ", incomplete" if self.incomplete else ""
        return f"Dimension({self.name!r}, {self.units!r}, {v.size} values: {span}{extra})"
