"""radical_edge_bench: ``radical-edge bench`` (or ``python -m radical_edge_bench``), the tunnel measured
against the same app served directly, on loopback with TLS.

Importing this package needs only the standard library; running the benchmark
needs the ``bench`` extra (``pip install 'radical-edge[bench]'``; wrk, if
installed, drives the HTTP load).
"""

from ._cli import Options, build_parser, main
from ._report import render

__all__ = ["Options", "build_parser", "main", "render"]
