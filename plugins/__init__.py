"""Built-in radical-edge plugins (installed as the package radical_edge_plugins)."""
