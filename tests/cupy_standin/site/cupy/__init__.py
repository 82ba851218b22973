"""Shim: ``import cupy`` in a subprocess with PYTHONPATH=tests/cupy_standin/site:tests gives the
test-only CuPy stand-in (``tests/cupy_standin``). Never shipped."""

import cupy_standin

cupy_standin.activate()  # replaces this module in sys.modules by the stand-in's ``cupy``
