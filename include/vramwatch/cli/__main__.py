"""`python -m vramwatch.cli`: the same as the `vramwatch` console script."""

import sys

from vramwatch.cli.main import main

sys.exit(main())
