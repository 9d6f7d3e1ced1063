"""`python -m stress`: the stress harness (stress/harness.py)."""

import sys

from .harness import main

sys.exit(main())
