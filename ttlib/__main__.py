"""``python -m ttlib`` (and ``torchrun -m ttlib``): the ``ttlib`` command."""

import sys

from ttlib.cli import main

sys.exit(main())
