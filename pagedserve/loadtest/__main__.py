"""`python -m loadtest ...`: see loadtest/cli.py."""

import sys

from pagedserve.loadtest.cli import main

sys.exit(main())
