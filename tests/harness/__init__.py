"""Real brokers for Tide's tests and benchmarks: from the environment, else started here."""

from tests.harness.brokers import Brokers, BrokerSession
from tests.harness.errors import HarnessError

__all__ = ["BrokerSession", "Brokers", "HarnessError"]
