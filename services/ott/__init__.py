"""The reference OTT platform: a video service, subscriptions, recommendations and
notifications, built on Tide the way a team's own platform is.

Its catalog (catalog.yaml), event schemas (ott.schemas) and tables (ott.migrations) are
its own files; its handlers and apps reach the runtime only through the interface a
team's package has: tide.handlers, tide.health, tide.auth, tide.events and tide.store.
"""
