"""`python -m devkit.chaos` (what `make chaos` runs)."""

import sys

from devkit.chaos.run import main

sys.exit(main())
