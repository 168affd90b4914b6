"""A plugin whose import fails (a missing dependency), registered as ``hello_broken``.

It shows how the edge reports a plugin it could not load: in its log and in
the manifest (``enabled: false`` with the reason), without failing the others.
"""

import radical_edge_example_missing_dependency  # noqa: F401  (deliberately not installed)
