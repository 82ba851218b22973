"""cupy_standin: a strict, test-only stand-in for CuPy, so usidgpu's GPU code paths run in CI.

**Test-only: it lives in ``tests/`` and must never ship in the wheel** (the wheel packages only
``usidgpu/``). It is not a GPU and not a CuPy replacement: it keeps every array in host memory
(NumPy underneath) and behaves like a device library, to make ``device="gpu"`` code execute on
machines without a GPU and *fail where real CuPy would fail*. It imitates CuPy 14 (the names and
signatures come from CuPy v14.2.0's source, see ``_cupy_api.py`` / ``_make_api.py``).

Activation
----------
``with cupy_standin.install(): import cupy`` puts the stand-in modules into ``sys.modules``
(``cupy``, ``cupy.cuda`` and its ``runtime``/``stream``/``device``/``memory``/``pinned_memory``,
``cupy.linalg``, ``cupy.fft``, ``cupy.random``, ``cupy.lib``, ``cupy.lib.stride_tricks``,
``cupy.exceptions``, ``cupyx``, ``cupyx.scipy``, ``cupyx.scipy.special``; with ``cuml=True``
also ``cuml``), each with a ``__spec__``; it clears usidgpu's ``gpu_status`` and
``_compiled_module`` caches on entry and exit and restores ``sys.modules`` on exit.
``install_into(monkeypatch)`` does the same through pytest's monkeypatch. A subprocess gets the
stand-in with ``PYTHONPATH=tests/cupy_standin/site:tests`` (``SITE_DIR``; add
``tests/cupy_standin/site_cuml`` for ``cuml``).

Imitated behaviours (each module's docstring says why and cites CuPy's source)
---------------------------------------------------------------------------
* ``cupy.ndarray`` (``_array``): not a NumPy subclass, ``__module__ == "cupy"``; ``__array__``
  raises CuPy's "Implicit conversion to a NumPy array is not allowed" TypeError (so
  ``np.asarray(x)``, h5py writes ... fail); NumPy operands in operators, ufuncs and functions
  raise ``TypeError("Unsupported type <class 'numpy.ndarray'>")`` from either side
  (``__array_ufunc__``/``__array_function__`` dispatch to the stand-in, NumPy functions CuPy
  lacks return NotImplemented so NumPy raises TypeError); Python/NumPy scalars are fine;
  reductions and element indexing give 0-d device arrays; ``float``/``int``/``complex``/
  ``bool``/``item``/``tolist``/``repr``/``str``/``format``/pickling are counted transfers and
  host waits (``bool`` of size > 1 raises ValueError, of size 0 warns and is False); views share
  memory and ``base`` names the owner; only CuPy's attributes exist; no ``__index__``; unhashable.
* Indexing (``_indexing``): host index arrays/lists are uploaded (counted); out-of-bounds
  integer-array indices wrap around (CuPy) instead of raising (NumPy); boolean masks cost a
  hidden device → host read and host wait; assigning a NumPy array through basic indexing raises
  ``ValueError("non-scalar numpy.ndarray cannot be used for fill")`` (CuPy's ``fill`` path,
  gh-2079), through advanced indexing it is uploaded.
* Namespace (``_functions``, ``_allowlist``, ``_argrules``, ``_creation``, ``_overrides``):
  exactly CuPy 14's names (others: AttributeError; CuPy names the stand-in does not imitate:
  NotImplementedError on use); keyword arguments checked against CuPy's signatures (``where=``
  on ufuncs, ``like=``, ``min=`` on ``clip``, ``out=`` on ``fft`` ... raise TypeError) and
  positional arguments mapped by CuPy's parameter names; host data handled per function as
  CuPy's source does: uploaded by the constructors ``array``/``asarray``/``asanyarray`` and
  where CuPy calls ``cupy.asarray`` on an argument (``tril``, ``isclose``, ``vstack``,
  ``diag`` ...), refused elsewhere (``concatenate``/``stack``/``column_stack`` with CuPy's
  messages, ``_util.check_array`` for ``nonzero``/``all``/..., Python lists as the first
  argument of functions that use it as a device array at once, NumPy arrays everywhere);
  ``ascontiguousarray`` requires a device array and returns 0-d input as 1-d;
  ``empty``/``empty_like``/``ndarray(shape)``/``cupyx.empty_pinned`` are filled with garbage
  (NaN, ``iinfo.max - 7``, True); ``take``/``take_along_axis``/``put`` wrap indices;
  ``allclose``/``array_equal``/``count_nonzero`` return 0-d arrays; functions with
  data-dependent output size (``nonzero``, ``unique``, ``where(c)``, ...) count a host wait;
  ``sort``/``argsort`` only stable; ufunc methods limited as CuPy's (``at`` only for scatter
  ufuncs and their dtypes, ``reduce``/``accumulate`` only add/multiply); floating-point errors
  never warn.
* ``cupy.linalg`` (``_linalg``): LinAlgError for NumPy inputs, batching as CuPy (``lstsq`` 2-D
  only, ``solve`` without stack broadcasting), no LinAlgError for singular/non-PD matrices
  (NaN results, as cuSOLVER's silent garbage) unless ``cupyx.errstate(linalg='raise')``,
  complex ``eig``, plain tuples instead of named tuples. ``cupy.fft``: NumPy's, device results.
  ``cupy.random``: CuPy's method sets (``Generator`` has no ``normal``/``choice``...), device
  results, NumPy's numbers. ``cupy.lib.stride_tricks``: ``sliding_window_view`` uploads NumPy
  input and reads ``window_shape`` back as CuPy 14 does.
* ``cupy.cuda`` (``cuda``, ``_streams``, ``_memory``): a configurable fake device (name,
  memory size, compute capability, attributes, ``getDeviceProperties``); memory pools with
  ``used/free/total_bytes``, ``mem_info`` shrinking with live arrays, ``OutOfMemoryError``;
  streams/events with **asynchronous host → device copies that are really late** (queued until
  an event/stream/device synchronization or ``wait_event`` forces them; pinned sources read
  when the copy runs), per-thread current streams, legacy-null-stream ordering, thread-safe.
* ``RawModule``/``RawKernel`` (``_kernels``): CuPy's argument conversion (``_pointer``,
  ``CScalar``), routed to the CPU kernel harness ``tests/cudasim``; strided device arrays
  refused; launches counted.
* ``cupyx``: ``scatter_add/max/min`` (deprecation warnings as CuPy 14), pinned arrays,
  ``errstate``, ``allow_synchronize`` (raises ``DeviceSynchronized`` on ``get``/``Device.
  synchronize``). ``cuml``: PCA/TruncatedSVD/KMeans with cuML's API, scikit-learn underneath.
* Counters (``_counters``): ``with counters() as c`` counts ``h2d``, ``d2h``, ``syncs``,
  ``launches`` (in every thread), with an event log ``(kind, thread, what, file:line)``
  (``c.summary()`` for assertion messages, ``c.of(kind, thread)`` to filter).

Public API
----------
``install(cuml=False)`` (context manager), ``install_into(monkeypatch, cuml=False)``,
``activate()`` (for good, used by the ``site`` shims), ``counters()``, ``configure(**knobs)``
(context manager) and ``CONFIG`` (see ``_config.Config``: ``device_name``, ``device_count``,
``total_memory``, ``compute_capability``, ``multiprocessor_count``, ``max_threads_per_block``,
``single_to_double_ratio``, ``poison_empty``, ``out_of_memory``, ``defer_waits``; also settable
as ``CUPY_STANDIN_<KNOB>`` environment variables, for subprocesses), ``reset()``,
``pending()`` (copies still queued), ``cupy``/``cupyx``/``MODULES`` (usable without installing),
``ndarray``, ``SITE_DIR``/``SITE_CUML_DIR``. The CuPy names and signatures are regenerated
with ``python tests/cupy_standin/_make_api.py <cupy git dir> v14.2.0 >
tests/cupy_standin/_cupy_api.py``.

Not imitated
------------
Speed and memory bandwidth; cuBLAS/cuSOLVER/cuFFT rounding and summation order (results are
NumPy's, bit for bit); the values of random numbers; nondeterministic results of duplicate
indices in assignments (NumPy's last-write-wins); kernels running concurrently with the host
(device computation runs eagerly, only uploads are deferred; ``Event.done`` never turns True by
itself); device → host copies with ``blocking=False`` are done at once; multi-GPU peer access
and per-device memory (arrays remember a device id, nothing checks it); CUDA graphs, DLPack,
``ElementwiseKernel``/``ReductionKernel``/``fuse`` compilation (``fuse`` runs the Python
function), texture memory, cubin/PTX modules, ``cupy.testing``, most of ``cupyx.scipy``; read-only
views (NumPy's ``broadcast_to`` and ``sliding_window_view`` results stay read-only here, CuPy
would let you write); Python lists in argument positions other than those listed in
``_argrules`` (accepted as NumPy would); pageable vs pinned transfer speed. Because device
computation is eager, a host that refills a pinned buffer after the consumer *computed* on the
upload but before ``Event.synchronize`` is not caught (on a GPU that compute, and so the DMA,
may still be queued); ``defer_waits=True`` catches the case where nothing ran in between.
Deliberately stricter than CuPy: NumPy arrays passed to functions that merely call a method of
their argument (``cupy.sum(numpy_array)`` silently returns NumPy's result on CuPy) raise here.
"""

from __future__ import annotations

from pathlib import Path

from . import _modules
from ._array import ndarray
from ._config import CONFIG, Config, configure
from ._counters import Counts, counters
from ._modules import MODULES, activate, install, install_into
from ._streams import pending

_modules._populate()

#: Put this folder on PYTHONPATH (with ``tests``) to get the stand-in in a subprocess.
SITE_DIR = Path(__file__).resolve().parent / "site"
#: Also put this one on PYTHONPATH to get the cuML stand-in as ``cuml``.
SITE_CUML_DIR = Path(__file__).resolve().parent / "site_cuml"

#: The stand-in ``cupy`` and ``cupyx`` modules (usable without installing them).
cupy = MODULES["cupy"]
cupyx = MODULES["cupyx"]


def reset() -> None:
    """Forget stand-in state between tests: run queued copies (uncounted), reset the random
    state, the memory pool's cache, the current stream and device of this thread."""
    from . import _memory, _random, _streams

    with _streams.LOCK:
        for q in list(_streams._QUEUES.values()):
            q.drain()
    _random.reset_states()
    _memory.DEFAULT_POOL.free_all_blocks()
    _streams.TLS.streams.clear()
    _streams.TLS.current = None
    _streams.TLS.device = 0


__all__ = [
    "CONFIG",
    "MODULES",
    "SITE_CUML_DIR",
    "SITE_DIR",
    "Config",
    "Counts",
    "activate",
    "configure",
    "counters",
    "cupy",
    "cupyx",
    "install",
    "install_into",
    "ndarray",
    "pending",
    "reset",
]
