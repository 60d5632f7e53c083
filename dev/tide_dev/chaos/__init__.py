"""Chaos experiments on the platform run as local processes: kill, freeze, starve, poison.

Each experiment states a hypothesis, checks the steady state, injects one fault,
observes, and returns a `Report`. The local chaos suite (tests/chaos) and
`tide-dev chaos <experiment>` run the same code.
"""
