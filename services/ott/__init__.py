"""The reference OTT platform: a video service, subscriptions, recommendations and
notifications, built on Tide the way a team's own platform is.

Its catalog (catalog.yaml), event schemas (ott.schemas) and tables (ott.migrations) are
its own files. Its handlers and apps import the runtime's modules as a team's package
may; the runtime imports nothing of this package and names none of its topics,
services or events (tests/unit/test_layout.py).
"""
