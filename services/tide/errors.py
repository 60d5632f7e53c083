"""How a failure is treated: what a handler raises, and which errors are the platform's.

One classification for every runner (Kafka groups, queue workers, the outbox relay):
a platform fault waits in place with a backoff and never counts toward a retry, a
delivery limit or the DLQ; a PermanentError goes to the DLQ at once; anything else
may pass on retry and takes the retry path.
"""

import psycopg


class TransientError(Exception):
    """Worth retrying later (a dependency is down, a timeout): goes to the next retry topic."""


class PermanentError(Exception):
    """Retrying cannot help (the event makes no sense for this handler): straight to the DLQ."""


class PlatformUnavailableError(RuntimeError):
    """A broker the platform itself needs did not answer (not the record's fault).

    The runners keep such a record where it is and try it again after a pause,
    instead of moving it along the retry topics toward the DLQ.
    """


# PostgreSQL unreachable, timing out or refusing our credentials (a pool that cannot hand
# out a connection in time is one of these too), or a row held by a member that lost its
# partition (lock_timeout); the service's role lacking a privilege (its grants are the
# deployment's, not the record's fault: a catalog that moved a table to another service
# while this one's pods were still rolling); and any broker the platform needs not answering.
PLATFORM_ERRORS: tuple[type[Exception], ...] = (
    psycopg.OperationalError,
    psycopg.errors.InsufficientPrivilege,
    PlatformUnavailableError,
)

# Every connection attempt to PostgreSQL gives up after this and counts as a platform fault.
CONNECT_TIMEOUT_S = 10


def pg_conninfo(dsn: str) -> str:
    """The DSN with the libpq settings every Tide connection to PostgreSQL uses.

    A partition is silence, not a refusal: without these, a query on an open connection
    waits for TCP's own limit (about 15 minutes), deaf to SIGTERM. A connect gives up after
    CONNECT_TIMEOUT_S; data unacknowledged for 15 s, or an idle link whose keepalives go
    unanswered for about 11 s, ends the connection with an OperationalError: a platform
    fault, waited out in place.
    """
    return psycopg.conninfo.make_conninfo(
        dsn,
        connect_timeout=CONNECT_TIMEOUT_S,
        keepalives=1,
        keepalives_idle=5,
        keepalives_interval=2,
        keepalives_count=3,
        tcp_user_timeout=15_000,
    )


# A record or job that met a platform fault is tried again after this, doubling to the max.
UNAVAILABLE_BACKOFF_S = 2.0
MAX_UNAVAILABLE_BACKOFF_S = 10.0
