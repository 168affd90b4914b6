"""radical_edge_client: placeholder until its issue lands."""
