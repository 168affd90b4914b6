"""radical_edge_cli: the ``radical-edge`` command."""
