"""A small shop on Tide: its API, its handlers and its event schemas (catalog.yaml names them)."""
