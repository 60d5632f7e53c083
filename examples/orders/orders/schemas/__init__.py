"""The JSON Schema of each event of the shop, '<type>.v<version>.json' (the catalog's `schemas`)."""
