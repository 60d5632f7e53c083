"""Tide's tools for a developer's machine, kept out of the runtime and its image.

Real brokers (Kafka in KRaft mode from Maven Central, RabbitMQ and PostgreSQL from
Debian's packages) started on loopback, or taken from the TIDE_* variables: what the
tests, the benchmarks, `make brokers` and `make local` run against.
"""

from tide_dev.brokers import Brokers, BrokerSession
from tide_dev.errors import HarnessError

__all__ = ["BrokerSession", "Brokers", "HarnessError"]
