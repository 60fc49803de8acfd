"""One module per provider family: sans-IO usage parsers and request helpers."""
