"""radical_edge_bridge: placeholder until its issue lands."""
