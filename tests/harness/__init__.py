"""The clusters Tide's tests deploy to: control plane, controllers, KWOK and a real node.

The brokers they run against come from `tide_dev` (dev/), as `make local` and the
benchmarks get theirs.
"""
