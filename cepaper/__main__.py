"""``python -m cepaper``: the ``cepaper`` command (see :mod:`cepaper.cli`)."""

import sys

from cepaper.cli import main

sys.exit(main())
