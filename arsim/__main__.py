"""``python -m arsim`` is the ``arsim`` command."""

import sys

from arsim.cli import main

sys.exit(main())
