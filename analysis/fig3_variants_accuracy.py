"""Figure 3 of the paper: test accuracy of the AR variants beside backprop (Fashion-MNIST).

Thin entry point to ``variants_plot.py`` (which draws figures 3 and 4 from run folders). Usage::

    python analysis/fig3_variants_accuracy.py runs/fmnist-exact runs/fmnist-fa \\
        runs/fmnist-learned runs/fmnist-noderiv runs/fmnist-learned-noderiv runs/fmnist-ce \\
        [--out FIG.png]

Default output: the first run folder's ``figures/fig3-variants-accuracy.png``.
"""

from __future__ import annotations

import sys

from variants_plot import main

if __name__ == "__main__":
    raise SystemExit(main(["--figure", "3", *sys.argv[1:]]))
