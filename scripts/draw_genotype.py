#!/usr/bin/env python
"""Draw the cells of a multi-domain genotype; the same as the console script ``mdnas-draw``.

python scripts/draw_genotype.py path/to/genotype.json --out DIR [--format png,svg]
"""

import os
import sys

sys.path.insert(
    0, os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
)  # run from a checkout

from mdnas_fairseq.viz.draw import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
