"""The reference OTT platform: one module per service, handlers as plain functions."""
