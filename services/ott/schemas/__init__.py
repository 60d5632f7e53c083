"""The reference platform's event schemas: `<type>.v<version>.json`, named by the catalog."""
