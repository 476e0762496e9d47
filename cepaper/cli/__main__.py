"""``python -m cepaper.cli``: the ``cepaper`` command, as ``python -m cepaper`` (see :mod:`cepaper.cli`)."""

import sys

from cepaper.cli import main

sys.exit(main())
