"""A deliberately slow user Process for the worker-kill test of test_parallel.py.

It lives in its own module so the test can ship it to dask workers by value
(``cloudpickle.register_pickle_by_value``): the workers do not have ``tests/`` on their path.
"""

from __future__ import annotations

import time
from typing import Any

from usidgpu.parallel.fits import PolynomialFit


class SlowFit(PolynomialFit):
    """:class:`PolynomialFit` that sleeps ``delay`` seconds per block, so blocks are in flight
    long enough for a worker to be killed under them; the results are PolynomialFit's."""

    def __init__(self, source: Any, degree: int = 1, delay: float = 0.2, **run_options: Any) -> None:
        super().__init__(source, degree, **run_options)
        self.delay = float(delay)

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["scheduler"] = None  # the test passes a distributed.Client, which does not pickle
        return state

    def compute(self, block: Any, xp: Any) -> dict[str, Any]:
        time.sleep(self.delay)
        return super().compute(block, xp)
