"""The ground floor: what every layer above may use and nothing here imports from above.

- :mod:`~usidgpu.core.errors` — the exceptions usidgpu raises;
- :mod:`~usidgpu.core.device` — ``auto | cpu | gpu`` and the GPU probe;
- :mod:`~usidgpu.core.memory` — memory sizes and budgets;
- :mod:`~usidgpu.core.arrays` — the array module of an input, host/device copies;
- :mod:`~usidgpu.core.kernels` — the CUDA sources and their compilation;
- :mod:`~usidgpu.core.stream` — block plans within a budget, the prefetching block reader;
- :mod:`~usidgpu.core.linalg`, :mod:`~usidgpu.core.fft`, :mod:`~usidgpu.core.scatter`,
  :mod:`~usidgpu.core.distances` — the NumPy/CuPy helpers the analyses share.
"""
