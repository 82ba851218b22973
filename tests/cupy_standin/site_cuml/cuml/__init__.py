"""Shim: ``import cuml`` gives the test-only cuML stand-in (PYTHONPATH=.../site_cuml:...)."""

import sys

from cupy_standin.cuml import module

sys.modules[__name__] = module()
