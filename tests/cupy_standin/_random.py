"""``cupy.random``: NumPy's generators, device results, CuPy's method sets.

The numbers differ from CuPy's (cuRAND's XORWOW is not NumPy's PCG64): tests must not depend on
the values. What is imitated is the API: ``default_rng()`` returns a :class:`Generator` with
only the methods CuPy's has (no ``normal``, ``choice``, ``permutation``, ... there: code calling
them fails here too), ``RandomState`` with CuPy's methods and their ``dtype=`` arguments, the
module-level functions drawing from a global ``RandomState``, results as device arrays (made on
the device: no transfer is counted). Device-array parameters (``lam=x``) are accepted, NumPy
arrays refused as everywhere.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _convert, _streams


def _np_args(args: tuple, kwargs: dict) -> tuple[list, dict]:
    _streams.compute()  # device-array parameters must hold their data before NumPy reads them
    return [_convert.unwrap(a) for a in args], {k: _convert.unwrap(v) for k, v in kwargs.items()}


def _result(res: Any, dtype: Any = None, out: Any = None) -> Any:
    if dtype is not None:
        res = np.asarray(res).astype(dtype, copy=False)
    if out is not None:
        if type(out) is not _convert.ndarray:
            raise _convert.host_error(out)
        _streams.compute()
        np.copyto(out._a, res, casting="unsafe")
        return out
    _streams.compute()
    return _convert.wrap(res)


class BitGenerator:
    """Base of CuPy's bit generators (here a NumPy ``PCG64`` seeded the same way)."""

    def __init__(self, seed: Any = None):
        if type(seed) is _convert.ndarray:
            seed = seed.get()
        self._np = np.random.PCG64(seed)

    def random_raw(self, size: Any = None, out: bool = False) -> Any:
        return _result(self._np.random_raw(size))


class XORWOW(BitGenerator):
    pass


class MRG32k3a(BitGenerator):
    pass


class Philox4x3210(BitGenerator):
    pass


class Generator:
    """``cupy.random.Generator``: the 18 methods CuPy's generator API has, no more."""

    def __init__(self, bit_generator: BitGenerator):
        self.bit_generator = bit_generator
        self._rng = np.random.Generator(bit_generator._np)

    def random(self, size: Any = None, dtype: Any = np.float64, out: Any = None) -> Any:
        return _result(self._rng.random(size, dtype=np.dtype(dtype)), None, out)

    def uniform(self, low: Any = 0.0, high: Any = 1.0, size: Any = None, dtype: Any = np.float64) -> Any:
        a, _ = _np_args((low, high), {})
        return _result(self._rng.uniform(a[0], a[1], size), dtype)

    def integers(
        self, low: Any, high: Any = None, size: Any = None, dtype: Any = np.int64, endpoint: bool = False
    ) -> Any:
        a, _ = _np_args((low, high), {})
        return _result(self._rng.integers(a[0], a[1], size, dtype=dtype, endpoint=endpoint))

    def beta(self, a: Any, b: Any, size: Any = None, dtype: Any = np.float64) -> Any:
        x, _ = _np_args((a, b), {})
        return _result(self._rng.beta(x[0], x[1], size), dtype)

    def standard_exponential(
        self, size: Any = None, dtype: Any = np.float64, method: str = "inv", out: Any = None
    ) -> Any:
        return _result(self._rng.standard_exponential(size, dtype=np.dtype(dtype), method=method), None, out)

    def standard_normal(self, size: Any = None, dtype: Any = np.float64, out: Any = None) -> Any:
        return _result(self._rng.standard_normal(size, dtype=np.dtype(dtype)), None, out)

    def standard_gamma(self, shape: Any, size: Any = None, dtype: Any = np.float64, out: Any = None) -> Any:
        _streams.compute()
        return _result(self._rng.standard_gamma(_convert.unwrap(shape), size, dtype=np.dtype(dtype)), None, out)


def _generator_method(name: str):
    def method(self: Generator, *args: Any, **kwargs: Any) -> Any:
        a, k = _np_args(args, kwargs)
        return _result(getattr(self._rng, name)(*a, **k))

    method.__name__ = name
    return method


for _name in (
    "chisquare",
    "dirichlet",
    "exponential",
    "f",
    "geometric",
    "hypergeometric",
    "logseries",
    "poisson",
    "power",
    "gamma",
    "binomial",
):
    setattr(Generator, _name, _generator_method(_name))


def default_rng(seed: Any = None) -> Generator:
    if isinstance(seed, BitGenerator):
        return Generator(seed)
    if isinstance(seed, Generator):
        return seed
    return Generator(XORWOW(seed))


#: RandomState methods of CuPy (``cupy/random/_generator.py``) and whether they take ``dtype``.
_RS_DTYPE = (
    "beta binomial chisquare dirichlet exponential f gamma geometric hypergeometric laplace logistic lognormal "
    "logseries negative_binomial normal pareto noncentral_chisquare noncentral_f poisson power rayleigh "
    "standard_cauchy standard_exponential standard_gamma standard_normal standard_t triangular uniform vonmises "
    "wald weibull zipf gumbel multivariate_normal"
).split()


class RandomState:
    """``cupy.random.RandomState(seed=None, method=None)``."""

    def __init__(self, seed: Any = None, method: Any = None):
        self._rs = np.random.RandomState(seed)

    def seed(self, seed: Any = None) -> None:
        self._rs.seed(seed)

    def rand(self, *size: int, **kwarg: Any) -> Any:
        dtype = kwarg.pop("dtype", float)
        if kwarg:
            raise TypeError(f"rand() got unexpected keyword arguments {', '.join(kwarg)}")
        return _result(self._rs.random_sample(size or None), dtype)

    def randn(self, *size: int, **kwarg: Any) -> Any:
        dtype = kwarg.pop("dtype", float)
        if kwarg:
            raise TypeError(f"randn() got unexpected keyword arguments {', '.join(kwarg)}")
        return _result(self._rs.standard_normal(size or None), dtype)

    def random_sample(self, size: Any = None, dtype: Any = float) -> Any:
        return _result(self._rs.random_sample(size), dtype)

    def randint(self, low: Any, high: Any = None, size: Any = None, dtype: Any = int) -> Any:
        return _result(self._rs.randint(low, high, size, dtype=dtype))

    def tomaxint(self, size: Any = None) -> Any:
        return _result(self._rs.randint(0, np.iinfo(np.int64).max, size))

    def choice(self, a: Any, size: Any = None, replace: bool = True, p: Any = None) -> Any:
        (a_, p_), _ = _np_args((a, p), {})
        return _result(self._rs.choice(a_, size, replace, p_))

    def shuffle(self, a: Any) -> None:
        if type(a) is not _convert.ndarray:
            raise TypeError("The array must be cupy.ndarray")
        _streams.compute()
        self._rs.shuffle(a._a)

    def permutation(self, a: Any) -> Any:
        (a_,), _ = _np_args((a,), {})
        return _result(self._rs.permutation(a_))


def _rs_method(name: str):
    def method(self: RandomState, *args: Any, dtype: Any = None, **kwargs: Any) -> Any:
        a, k = _np_args(args, kwargs)
        return _result(getattr(self._rs, name)(*a, **k), dtype)

    method.__name__ = name
    return method


for _name in _RS_DTYPE:
    setattr(RandomState, _name, _rs_method(_name))

_STATE: dict[str, RandomState] = {}


def get_random_state() -> RandomState:
    if "rs" not in _STATE:
        _STATE["rs"] = RandomState()
    return _STATE["rs"]


def set_random_state(rs: RandomState) -> None:
    if not isinstance(rs, RandomState):
        raise TypeError(f"Random state must be an instance of RandomState. Actual: {type(rs)}")
    _STATE["rs"] = rs


def reset_states() -> None:
    _STATE.clear()


def _random_integers(low: int, high: int | None = None, size: Any = None) -> Any:
    if high is None:
        low, high = 1, low
    return get_random_state().randint(low, high + 1, size)


def seed(seed: Any = None) -> None:
    get_random_state().seed(seed)


for _cls in (Generator, RandomState, BitGenerator, XORWOW, MRG32k3a, Philox4x3210):
    _cls.__module__ = "cupy.random"


def namespace() -> dict[str, Any]:
    """Objects for ``cupy.random`` (module functions draw from :func:`get_random_state`)."""
    from ._allowlist import NAMES, check_call
    from ._functions import Gap

    mine = {
        "default_rng": default_rng,
        "Generator": Generator,
        "RandomState": RandomState,
        "BitGenerator": BitGenerator,
        "XORWOW": XORWOW,
        "MRG32k3a": MRG32k3a,
        "Philox4x3210": Philox4x3210,
        "get_random_state": get_random_state,
        "set_random_state": set_random_state,
        "reset_states": reset_states,
        "seed": seed,
        "bytes": np.random.bytes,
    }
    aliases = {"random": "random_sample", "ranf": "random_sample", "sample": "random_sample"}
    ns: dict[str, Any] = {}
    for name in [*NAMES["cupy.random"], "Generator"]:
        if name in mine:
            ns[name] = mine[name]
            continue
        target = aliases.get(name, name)
        if hasattr(RandomState, target):

            def f(*args: Any, _target: str = target, _q: str = f"cupy.random.{name}", **kwargs: Any) -> Any:
                check_call(_q, args, kwargs)
                return getattr(get_random_state(), _target)(*args, **kwargs)

            f.__name__ = f.__qualname__ = name
            f.__module__ = "cupy.random"
            ns[name] = f
        elif name == "multinomial":
            ns[name] = lambda n, pvals, size=None: _result(
                get_random_state()._rs.multinomial(n, _convert.unwrap(pvals), size)
            )
        elif name == "random_integers":
            ns[name] = _random_integers
        else:
            ns[name] = Gap(f"cupy.random.{name}")
    return ns
