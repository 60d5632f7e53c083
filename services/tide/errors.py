"""What a handler raises to tell the runner how a failure should be treated."""


class TransientError(Exception):
    """Worth retrying later (a dependency is down, a timeout): goes to the next retry topic."""


class PermanentError(Exception):
    """Retrying cannot help (the event makes no sense for this handler): straight to the DLQ."""


class PlatformUnavailableError(RuntimeError):
    """A broker the platform itself needs did not answer (not the record's fault).

    The runners keep such a record where it is and try it again after a pause,
    instead of moving it along the retry topics toward the DLQ.
    """
