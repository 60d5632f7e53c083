"""`make brokers`: start the brokers here and print the TIDE_* variables that reach them.

Useful for `tide-dev run`, `tide-dev chaos`, benchmarks and poking at things by hand.
TIDE_CHAOS_CONTROL_URL lets `tide-dev chaos` stop and start these brokers. Ctrl-C stops them.
"""

from __future__ import annotations

import sys

from ott.catalog import CATALOG, REFERENCE_CATALOG
from tide.rabbitmq.definitions import definitions
from tide.waiting import until_terminated
from tide_dev.brokers import BrokerSession
from tide_dev.chaos.control import CONTROL_URL_VARIABLE
from tide_dev.control import HarnessControl, serve
from tide_dev.errors import HarnessError


def main() -> int:
    session = BrokerSession()
    try:
        brokers = session.open()
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if session.rabbitmq is not None:
        # The catalog's exchanges, quorum queues and dead-letter policies, as on Kubernetes.
        session.rabbitmq.import_definitions(definitions(CATALOG))
    control, control_url = serve(HarnessControl(session))
    variables = {
        **brokers.as_env(),
        CONTROL_URL_VARIABLE: control_url,
        # The catalog whose exchanges and queues were just declared, for `tide` commands.
        "TIDE_CATALOG_FILE": str(REFERENCE_CATALOG),
    }
    for key, value in variables.items():
        print(f"export {key}='{value}'")
    print(f"# logs and data: {session.root}; Ctrl-C stops the brokers", flush=True)
    try:
        until_terminated()
    finally:
        control.shutdown()
        control.server_close()
        session.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
