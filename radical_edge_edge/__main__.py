"""``python -m radical_edge_edge``: the same as ``radical-edge-service``."""

import sys

from ._cli import main

sys.exit(main())
