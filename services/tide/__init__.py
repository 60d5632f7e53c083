"""Tide: the event runtime and the reference OTT services."""
