"""``python -m arsim.sweep``: ``_point POINT.json`` runs one point; else ``arsim sweep``.

``python -m arsim.sweep _point POINT.json`` is the process of one point
(:func:`arsim.sweep.points.point_main`); ``python -m arsim.sweep SWEEP.toml [options]`` is
``arsim sweep SWEEP.toml [options]``.
"""

import sys

from arsim.cli import main
from arsim.sweep.points import point_main

if len(sys.argv) == 3 and sys.argv[1] == "_point":
    sys.exit(point_main(sys.argv[2]))
sys.exit(main(["sweep", *sys.argv[1:]]))
