"""The events every benchmark sends: catalog-valid, of a chosen size, with varied keys."""

from __future__ import annotations

from tide.events.envelope import CloudEvent

RECOMMENDATION = "recommendation.generated"


def recommendation(size: int, n: int) -> CloudEvent:
    """A `recommendation.generated` event whose JSON payload is about `size` bytes."""
    count = 3 if size < 500 else 20
    length = max(8, min(64, (size - 90) // count - 3))
    return CloudEvent(
        type=RECOMMENDATION,
        source="/bench",
        data={
            "user_id": f"user-{n % 1000}",
            "video_ids": [f"v{n:06d}-{i:02d}-".ljust(length, "x") for i in range(count)],
            "reason": "because you watched",
        },
    )


def watch_completed(
    n: int, *, video: str = "bench-video", session: str | None = None
) -> dict[str, object]:
    """The body a client POSTs to the video-service for a finished view of `video`."""
    return {
        "type": "video.watch.completed",
        "data": {
            "user_id": f"user-{n % 1000}",
            "video_id": video,
            "session_id": session or f"bench-s{n}",
            "watched_s": 60,
            "finished": True,
        },
    }
