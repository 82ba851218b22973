"""What every analysis result knows about the data it came from: dimensions, quantity and units,
grid layout, the source Main dataset, the device and the parameters. Results of every analysis
derive from :class:`Described`, so plots get their units and results groups their layout without
re-reading the source."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .dimension import Dimension


@dataclass
class Described:
    """What every result knows about the data it came from."""

    pos_dims: list[Dimension] = field(default_factory=list, repr=False)
    spec_dims: list[Dimension] = field(default_factory=list, repr=False)
    quantity: str = "Data"
    units: str = "a. u."
    pos_grid: bool = True  # positions fill a full grid (maps can be drawn as images)
    spec_grid: bool = True
    source: Any = field(default=None, repr=False)  # the MainDataset, when there was one
    device: str = "cpu"
    parameters: dict = field(default_factory=dict)

    @property
    def pos_shape(self) -> tuple[int, ...]:
        """Shape of the position grid (file order), or (n_positions,) when not a grid."""
        return tuple(d.size for d in self.pos_dims)

    @property
    def spec_shape(self) -> tuple[int, ...]:
        return tuple(d.size for d in self.spec_dims)
