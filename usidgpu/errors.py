"""The errors usidgpu raises (public names; defined in :mod:`usidgpu.core.errors`)."""

from .core.errors import *  # noqa: F401,F403
from .core.errors import __all__  # noqa: F401
