"""What the `tide` command prints and the codes it exits with, for every command group."""

from __future__ import annotations

from rich.console import Console

# Errors are single lines a log collector keeps whole: never wrapped at the terminal width,
# and plain text: a message quoting `[a-z0-9-]` lost it to Rich's markup.
err = Console(stderr=True, soft_wrap=True, markup=False, highlight=False)
out = Console()

EXIT_USAGE = 2
EXIT_CONFIG = 3
# A broker, database or registry did not answer. One-shot commands (the Jobs) exit
# with it at once: Kubernetes restarts a Job's pod with its own backoff.
EXIT_UNAVAILABLE = 4
