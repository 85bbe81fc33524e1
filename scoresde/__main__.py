"""``python -m scoresde``: the command line, as the ``scoresde`` script (:mod:`scoresde.cli`)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
