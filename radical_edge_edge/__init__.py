"""radical_edge_edge: placeholder until its issue lands."""
