"""``python -m hlcbus``: the command line (see cli.py)."""

import sys

from hlcbus.cli import main

sys.exit(main())
