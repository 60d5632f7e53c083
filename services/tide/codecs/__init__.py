"""Serialization of events for the wire."""
