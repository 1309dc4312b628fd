"""``python -m softhist``: the ``softhist`` command."""

import sys

from softhist.cli import main

if __name__ == "__main__":
    sys.exit(main())
