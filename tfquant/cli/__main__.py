"""``python -m tfquant.cli``: the same as the ``tfquant`` command."""

import sys

from tfquant.cli import main

sys.exit(main())
