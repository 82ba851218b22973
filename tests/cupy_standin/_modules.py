"""The stand-in's module objects (``cupy``, ``cupy.cuda``, ..., ``cupyx``) and their activation.

Each is a real ``types.ModuleType`` named as CuPy's, with a ``__spec__`` (so
``importlib.util.find_spec("cupy")`` finds it once it is in ``sys.modules``) and ``__path__``
for packages (so ``import cupy.cuda`` resolves through ``sys.modules``, and ``import
cupy.nonexistent`` fails as for a package without that submodule).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.machinery
import sys
import types
from collections.abc import Iterator
from typing import Any

import numpy as np

from . import _allowlist

CUPY_VERSION = _allowlist.CUPY_REF.lstrip("v")

#: Module name → is a package.
LAYOUT = {
    "cupy": True,
    "cupy.cuda": True,
    "cupy.cuda.runtime": False,
    "cupy.cuda.stream": False,
    "cupy.cuda.device": False,
    "cupy.cuda.memory": False,
    "cupy.cuda.pinned_memory": False,
    "cupy.linalg": True,
    "cupy.fft": True,
    "cupy.random": True,
    "cupy.lib": True,
    "cupy.lib.stride_tricks": False,
    "cupy.exceptions": False,
    "cupyx": True,
    "cupyx.scipy": True,
    "cupyx.scipy.special": True,
}
_LAZY = {"cupyx.scipy.special"}  # imports SciPy: filled on first attribute access


def _new_module(name: str, package: bool) -> types.ModuleType:
    m = types.ModuleType(name, f"cupy_standin's imitation of ``{name}`` (test-only, NumPy in host memory).")
    m.__spec__ = importlib.machinery.ModuleSpec(name, loader=None, is_package=package)
    m.__loader__ = None
    m.__package__ = name if package else name.rpartition(".")[0]
    if package:
        m.__path__ = []  # type: ignore[attr-defined]
        m.__spec__.submodule_search_locations = []
    m.__cupy_standin__ = True  # type: ignore[attr-defined]
    return m


MODULES: dict[str, types.ModuleType] = {name: _new_module(name, pkg) for name, pkg in LAYOUT.items()}


def build_namespace(module: str) -> dict[str, Any]:
    """Name → object of one stand-in module (``_functions.namespace`` caches it)."""
    from . import _cupyx, _functions, _linalg, _random, _stride_tricks, cuda

    if module == "cupy":
        ns = _functions.build_cupy_namespace()
        ns.update(
            cuda=MODULES["cupy.cuda"],
            linalg=MODULES["cupy.linalg"],
            fft=MODULES["cupy.fft"],
            random=MODULES["cupy.random"],
            lib=MODULES["cupy.lib"],
            exceptions=MODULES["cupy.exceptions"],
            polynomial=_functions.Gap("cupy.polynomial"),
            __version__=CUPY_VERSION,
        )
        return ns
    if module == "cupy.exceptions":
        return {k: getattr(np.exceptions, k) for k in dir(np.exceptions) if not k.startswith("_")}
    if module == "cupy.fft":
        ns = {}
        for name, kind in _allowlist.NAMES["cupy.fft"].items():
            if name == "config":
                ns[name] = _functions.Gap("cupy.fft.config", "cuFFT plan settings")
            else:
                ns[name] = _functions._object_for("cupy.fft", name, kind, np.fft)
        return ns
    if module == "cupy.linalg":
        return _linalg.namespace()
    if module == "cupy.random":
        return _random.namespace()
    if module == "cupy.lib":
        return {"stride_tricks": MODULES["cupy.lib.stride_tricks"]}
    if module == "cupy.lib.stride_tricks":
        return {"as_strided": _stride_tricks.as_strided, "sliding_window_view": _stride_tricks.sliding_window_view}
    if module.startswith("cupy.cuda"):
        ns = dict(cuda.namespaces()[module])
        if module == "cupy.cuda":
            for sub in ("runtime", "stream", "device", "memory", "pinned_memory"):
                ns[sub] = MODULES[f"cupy.cuda.{sub}"]
        return ns
    if module == "cupyx":
        ns = _cupyx.namespace()
        ns["scipy"] = MODULES["cupyx.scipy"]
        return ns
    if module == "cupyx.scipy":
        ns = _cupyx.scipy_namespace()
        ns["special"] = MODULES["cupyx.scipy.special"]
        return ns
    if module == "cupyx.scipy.special":
        return _cupyx.special_namespace()
    raise KeyError(module)


def _lazy_getattr(module: str):
    def __getattr__(name: str) -> Any:
        from . import _functions

        ns = _functions.namespace(module)
        if name not in ns:
            raise AttributeError(f"module '{module}' has no attribute '{name}'")
        MODULES[module].__dict__.update(ns)
        return ns[name]

    return __getattr__


def _populate() -> None:
    from . import _functions

    for name, m in MODULES.items():
        if name in _LAZY:
            m.__getattr__ = _lazy_getattr(name)  # type: ignore[attr-defined]
        else:
            m.__dict__.update(_functions.namespace(name))


# -- activation -----------------------------------------------------------------------------------


#: usidgpu's caches that depend on which ``cupy`` is imported: the GPU probe, compiled kernels.
_USIDGPU_CACHES = (
    ("usidgpu.core.device", "gpu_status"),
    ("usidgpu.core.kernels", "_compiled_module"),
    ("usidgpu.core.kernels", "_kernel"),
)


def _clear_usidgpu_caches() -> None:
    for module, attr in _USIDGPU_CACHES:
        owner = sys.modules.get(module)
        fn = getattr(owner, attr, None) if owner is not None else None
        if hasattr(fn, "cache_clear"):
            fn.cache_clear()


def _ours(cuml: bool) -> dict[str, types.ModuleType]:
    mods = dict(MODULES)
    if cuml:
        from .cuml import module as cuml_module

        mods["cuml"] = cuml_module()
    return mods


def _shadowed(cuml: bool) -> list[str]:
    """Names in ``sys.modules`` a real CuPy (or cuML) left that must be hidden meanwhile."""
    prefixes = ("cupy.", "cupyx.", "cupy_backends") + (("cuml.",) if cuml else ())
    return [n for n in sys.modules if n.startswith(prefixes) and n not in MODULES]


@contextlib.contextmanager
def install(cuml: bool = False) -> Iterator[types.ModuleType]:
    """Make ``import cupy`` (and ``cupyx``, optionally ``cuml``) give the stand-in.

    Restores ``sys.modules`` as it was on exit and clears usidgpu's cached GPU status and
    compiled kernels on entry and exit.

    Yields
    ------
    module
        The stand-in ``cupy``.
    """
    mods = _ours(cuml)
    saved = {n: sys.modules.get(n, _ABSENT) for n in [*mods, *_shadowed(cuml)]}
    _clear_usidgpu_caches()
    for n in saved:
        sys.modules.pop(n, None)
    sys.modules.update(mods)
    try:
        yield MODULES["cupy"]
    finally:
        for n in mods:
            sys.modules.pop(n, None)
        for n, old in saved.items():
            if old is not _ABSENT:
                sys.modules[n] = old
        _clear_usidgpu_caches()


_ABSENT = object()


def install_into(monkeypatch: Any, cuml: bool = False) -> types.ModuleType:
    """:func:`install` through pytest's ``monkeypatch`` (undone at the test's teardown).

    usidgpu's ``gpu_status`` and ``_compiled_module`` caches are replaced by fresh ones for the
    test (the originals, with whatever they cached, come back at teardown).
    """
    mods = _ours(cuml)
    for n in _shadowed(cuml):
        monkeypatch.delitem(sys.modules, n, raising=False)
    for n, m in mods.items():
        monkeypatch.setitem(sys.modules, n, m)
    for module, attr in _USIDGPU_CACHES:  # fresh caches for the test, the originals back after it
        owner = sys.modules.get(module)
        fn = getattr(owner, attr, None) if owner is not None else None
        if hasattr(fn, "__wrapped__"):
            cache = functools.lru_cache(maxsize=1) if attr == "gpu_status" else functools.cache
            monkeypatch.setattr(owner, attr, cache(fn.__wrapped__))
    return MODULES["cupy"]


def activate() -> types.ModuleType:
    """Install for good (no restore): what the ``site/`` shims do in a subprocess."""
    sys.modules.update(MODULES)
    return MODULES["cupy"]
