"""Every CUDA kernel of usidgpu launched once with small inputs, through the library's own calls —
the program that ``compute-sanitizer`` (memcheck, racecheck, synccheck, initcheck) watches in
``device_check.py``. It checks the results against the CPU path and exits non-zero on a mismatch.

    compute-sanitizer --tool racecheck --error-exitcode 99 python benchmarks/kernel_smoke.py
"""

from __future__ import annotations

import sys

import numpy as np


def main() -> int:
    import cupy

    from usidgpu.atoms.fit import refine
    from usidgpu.atoms.synthetic import lattice_image
    from usidgpu.denoise.patches import patch_chunks

    failures = []
    # gather_windows<float>, <double>: a few chunks of a small image
    image = (np.random.default_rng(0).random((23, 29)) * 50).astype(np.float32)
    for dtype in (np.float32, np.float64):
        img = image.astype(dtype)
        ref = np.concatenate([c for *_, c in patch_chunks(np, img, (6, 5), (2, 1), 3, shift=7.5)])
        got = cupy.concatenate([c for *_, c in patch_chunks(cupy, cupy.asarray(img), (6, 5), (2, 1), 3, shift=7.5)])
        if not np.array_equal(cupy.asnumpy(got), ref):
            failures.append(f"gather_windows<{np.dtype(dtype).name}> differs from the NumPy patches")
    # fit_gaussian2d<double>, <float>: a dozen columns, border columns included
    s = lattice_image((56, 60), spacing=14, angle_deg=7, dose=200, read_noise=0.02, seed=1)
    cpu = refine(s.image, s.positions, radius=5.0, device="cpu", engine="array")
    for precision in ("float64", "float32"):
        gpu = refine(s.image, s.positions, radius=5.0, device="gpu", engine="kernel", precision=precision)
        tolerance = 1e-6 if precision == "float64" else 2e-3
        if not (gpu.converged == cpu.converged).all() or np.abs(gpu.positions - cpu.positions).max() > tolerance:
            failures.append(f"fit_gaussian2d ({precision}) differs from the array engine")
    cupy.cuda.Device().synchronize()
    for f in failures:
        print(f"kernel_smoke: {f}", file=sys.stderr)
    print(f"kernel_smoke: {'FAILED' if failures else 'ok'} (gather_windows x2, fit_gaussian2d x2)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
