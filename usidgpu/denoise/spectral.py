"""Spectral denoising: a spectrum image rebuilt from its first k SVD components, streamed."""

from __future__ import annotations

import os

import numpy as np

from ..core.arrays import asnumpy
from ..core.device import Device, select_device
from ..core.errors import InvalidType
from ..decompose.svd import svd
from ..usid.dataset import MainDataset
from ..usid.results import ResultsWriter


def spectral_denoise(
    main: MainDataset,
    k: int,
    method: str = "auto",
    device: str | Device | None = None,
    budget: int | str | None = None,
    output: str | os.PathLike | None = None,
    progress: bool = False,
) -> str:
    """Rebuild every spectrum from the first ``k`` right singular vectors and write the result.

    ``X̂ = X·Vₖᴴ·Vₖ`` is the rank-k truncated SVD of the data. It is computed block by block —
    each block projected on the k spectral components of the streamed SVD — and written block
    by block into ``Denoised_Data`` of ``<Source>-Spectral_Denoise_NNN`` (a Main dataset with
    the source's dimensions), next to the source or into ``output``. The write goes through a
    sidecar file and resumes after an interruption.

    Parameters
    ----------
    main : MainDataset
    k : int
        Components kept.
    method, device, budget, progress
        As for :func:`usidgpu.svd`.
    output : path, optional
        Write the results group into this file instead of the source's.

    Returns
    -------
    str
        HDF5 path of the results group.
    """
    if not isinstance(main, MainDataset):
        raise InvalidType("spectral_denoise needs a MainDataset (open the file with usidgpu.open)")
    dev = select_device(device)
    result = svd(main, k, method=method, device=dev, budget=budget, progress=progress)
    params = dict(num_components=k, svd_method=result.method)
    writer = ResultsWriter.begin(main, "Spectral_Denoise", params, output=output, device=dev)
    try:
        dtype = main.dtype if main.dtype.kind in "fc" else np.float32
        target = writer.write_main("Denoised_Data", main.shape, main.quantity, main.units, main, main, dtype=dtype)
        if "V" not in writer.group:
            writer.group.create_dataset("S", data=result.S)
            writer.group.create_dataset("V", data=result.V)
        xp = dev.xp
        from ..core.memory import memory_budget

        block_budget = memory_budget(budget, dev) // 4  # buffers; the projection's temporaries take the rest
        v = xp.asarray(result.V)
        projector = v.conj().T  # n × k
        for a, b in writer.pending():
            for block in main.blocks(device=dev, start=a, stop=b, budget=block_budget, progress=progress):
                x = block.data.astype(v.dtype, copy=False)
                target.write_rows(block.start, asnumpy((x @ projector) @ v).astype(dtype, copy=False))
                writer.mark_done(block.start, block.stop)
    except BaseException:
        writer.close()  # an interrupted run resumes; the sidecar stays
        raise
    return writer.finish()
