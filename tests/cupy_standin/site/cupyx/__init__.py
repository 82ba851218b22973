"""Shim: ``import cupyx`` gives the test-only CuPy stand-in's ``cupyx`` (see ../cupy)."""

import cupy_standin

cupy_standin.activate()  # replaces this module in sys.modules by the stand-in's ``cupyx``
