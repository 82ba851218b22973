"""Bayesian inference, batched over pixels: a general Gaussian linear-regression posterior
(:mod:`usidgpu.bayes.linear`) and the G-mode I–V model of pycroscopy's ``GIVBayesian`` on top of
it (:mod:`usidgpu.bayes.giv`), run on USID Main datasets by :class:`GIVBayesian`
(:mod:`usidgpu.bayes.process`)."""

from .giv import DEFAULTS, GIVModel, GIVResult, GIVSettings, giv_bayesian, simulate_giv
from .linear import Posterior, SharedOperator, posterior, sample_posterior, shared_operator

__all__ = [
    "DEFAULTS",
    "GIVBayesian",
    "GIVModel",
    "GIVResult",
    "GIVSettings",
    "Posterior",
    "SharedOperator",
    "giv_bayesian",
    "posterior",
    "sample_posterior",
    "shared_operator",
    "simulate_giv",
]


def __getattr__(name: str):
    if name == "GIVBayesian":  # the Process pulls in the parallel machinery: import it lazily
        from .process import GIVBayesian

        return GIVBayesian
    raise AttributeError(name)
