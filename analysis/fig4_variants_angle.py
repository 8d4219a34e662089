"""Figure 4 of the paper: angle between each AR variant's update and the backprop gradient.

Thin entry point to ``variants_plot.py`` (which draws figures 3 and 4 from run folders). Usage::

    python analysis/fig4_variants_angle.py runs/fmnist-exact runs/fmnist-fa \\
        runs/fmnist-learned runs/fmnist-noderiv runs/fmnist-learned-noderiv runs/fmnist-ce \\
        [--out FIG.png]

Default output: the first run folder's ``figures/fig4-variants-angle.png``.
"""

from __future__ import annotations

import sys

from variants_plot import main

if __name__ == "__main__":
    raise SystemExit(main(["--figure", "4", *sys.argv[1:]]))
