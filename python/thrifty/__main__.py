"""``python -m thrifty``: the ``thrifty`` command line."""

import sys

from .cli import main

sys.exit(main())
