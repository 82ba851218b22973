"""``python -m usidgpu.cli`` runs the command line, as ``python -m usidgpu`` does."""

import sys

from . import main

sys.exit(main())
