"""``python -m bioscale.cli``: the ``bioscale`` command."""

import sys

from bioscale.cli import main

if __name__ == "__main__":
    sys.exit(main())
