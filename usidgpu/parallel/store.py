"""The block store and run locks of the Process framework, now in :mod:`usidgpu.storage`.

They are storage, not the framework's logic: the crash-safe zarr block store lives in
:mod:`usidgpu.storage.sidecar`, the run locks in :mod:`usidgpu.storage.locks`. The names stay
importable from here (:class:`~usidgpu.parallel.Process` and ``usidgpu.parallel.BlockStore``
use them); new code imports them from :mod:`usidgpu.storage`.
"""

from __future__ import annotations

from ..storage.locks import RunInProgress, lock_holder, run_lock
from ..storage.sidecar import PARTIAL, REMOVING, BlockStore, clear_removed, read_meta, remove_store

__all__ = [
    "PARTIAL",
    "REMOVING",
    "BlockStore",
    "RunInProgress",
    "clear_removed",
    "lock_holder",
    "read_meta",
    "remove_store",
    "run_lock",
]
