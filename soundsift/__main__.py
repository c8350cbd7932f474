"""`python -m soundsift ...` runs the command line."""

import sys

from soundsift.cli.main import main

sys.exit(main())
