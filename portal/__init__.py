"""The browser Explorer: static files the bridge serves (``GET /``, ``GET /plugins/{name}.js``)."""
