"""THE topology of the reference OTT platform: every topic, service, group, queue and event.

Adding a consumer is one `ConsumerGroup` entry here plus one handler function.
The Pulumi program, the local runner and the tests all read `CATALOG`.
"""

from __future__ import annotations

from tide.topology import (
    Alerting,
    Autoscaling,
    Binding,
    Catalog,
    CleanupPolicy,
    ConsumerGroup,
    EventType,
    Exchange,
    Queue,
    QueueWorker,
    RetryPolicy,
    Role,
    Service,
    Topic,
)

_HOUR_MS = 3_600_000
_DAY_MS = 24 * _HOUR_MS

CATALOG = Catalog(
    topics=(
        Topic(
            name="user-events",
            partitions=6,
            retention_ms=7 * _DAY_MS,
            description="sign-ups and profile changes; key = user id",
        ),
        Topic(
            name="content-events",
            partitions=3,
            retention_ms=30 * _DAY_MS,
            cleanup_policy=CleanupPolicy.COMPACT,
            description="catalogue changes; key = video id, compacted to the latest state",
        ),
        Topic(
            name="video-events",
            partitions=6,
            retention_ms=7 * _DAY_MS,
            description="watch started/completed, quality changed, ratings; key = user id",
        ),
        Topic(
            name="video-heartbeat",
            partitions=6,
            retention_ms=2 * _HOUR_MS,
            description="player heartbeats every few seconds; high rate, short retention",
        ),
        Topic(
            name="payment-events",
            partitions=3,
            retention_ms=30 * _DAY_MS,
            description="subscription payments, published through the outbox",
        ),
        Topic(
            name="recommendation-events",
            partitions=3,
            retention_ms=3 * _DAY_MS,
            description="recommendations made for a user; key = user id",
        ),
        Topic(
            name="system-events",
            partitions=1,
            retention_ms=3 * _DAY_MS,
            description="platform notices (deploys, redrives)",
        ),
    ),
    services=(
        Service(
            name="video-service",
            role=Role.API,
            description="HTTP API of the player: accepts watch events once Kafka has them",
            produces=("video-events", "video-heartbeat"),
            replicas=2,
            public=True,
        ),
        Service(
            name="subscription",
            role=Role.API,
            description="event-sourced subscriptions; payments leave through the outbox",
            produces=("payment-events",),
        ),
        Service(
            name="recommendation",
            role=Role.CONSUMER,
            description="recommends what to watch next from what was watched",
            produces=("recommendation-events",),
        ),
        Service(
            name="personalization",
            role=Role.CONSUMER,
            description="keeps a viewing profile per user in PostgreSQL",
        ),
        Service(
            name="analytics",
            role=Role.CONSUMER,
            description="concurrent viewers and quality distribution",
        ),
        Service(
            name="badges",
            role=Role.CONSUMER,
            description="awards badges for viewing milestones",
        ),
        Service(
            name="notification-dispatch",
            role=Role.CONSUMER,
            description="turns recommendations into notification jobs on RabbitMQ",
            publishes_to_exchanges=("notifications",),
        ),
        Service(
            name="notification-worker",
            role=Role.WORKER,
            description="delivers notification jobs; competing consumers",
        ),
    ),
    consumer_groups=(
        ConsumerGroup(
            name="recommendation",
            service="recommendation",
            topics=("video-events", "content-events"),
            handler="tide.apps.recommendation:handle",
            autoscaling=Autoscaling(min_replicas=1, max_replicas=3, lag_threshold=100),
        ),
        ConsumerGroup(
            name="personalization",
            service="personalization",
            topics=("video-events",),
            handler="tide.apps.personalization:handle",
            autoscaling=Autoscaling(min_replicas=1, max_replicas=6, lag_threshold=200),
        ),
        ConsumerGroup(
            name="analytics",
            service="analytics",
            topics=("video-events", "video-heartbeat"),
            handler="tide.apps.analytics:handle",
            # Heartbeats are worthless once late: retry quickly, then give up to the DLQ.
            retry=RetryPolicy(delays_s=(1, 5)),
            autoscaling=Autoscaling(min_replicas=1, max_replicas=6, lag_threshold=1000),
            alerting=Alerting(max_lag=20_000),
        ),
        ConsumerGroup(
            name="badges",
            service="badges",
            topics=("video-events",),
            handler="tide.apps.badges:handle",
            autoscaling=Autoscaling(min_replicas=0, max_replicas=2, lag_threshold=500),
        ),
        ConsumerGroup(
            name="notification-dispatch",
            service="notification-dispatch",
            topics=("recommendation-events",),
            handler="tide.apps.notification_dispatch:handle",
            autoscaling=Autoscaling(min_replicas=1, max_replicas=3, lag_threshold=100),
        ),
    ),
    exchanges=(Exchange(name="notifications"),),
    queues=(Queue(name="notifications", delivery_limit=5),),
    bindings=(Binding(exchange="notifications", queue="notifications", routing_key="notify.#"),),
    queue_workers=(
        QueueWorker(
            service="notification-worker",
            queue="notifications",
            handler="tide.apps.notification_worker:handle",
            autoscaling=Autoscaling(min_replicas=1, max_replicas=5, lag_threshold=50),
        ),
    ),
    events=(
        EventType(
            type="video.watch.started", topic="video-events", key="user_id", source="/video-service"
        ),
        EventType(
            type="video.watch.completed",
            topic="video-events",
            key="user_id",
            source="/video-service",
        ),
        EventType(
            type="video.quality.changed",
            topic="video-events",
            key="user_id",
            source="/video-service",
        ),
        EventType(type="video.rated", topic="video-events", key="user_id", source="/video-service"),
        EventType(
            type="video.heartbeat", topic="video-heartbeat", key="user_id", source="/video-service"
        ),
        EventType(
            type="content.published", topic="content-events", key="video_id", source="/content"
        ),
        EventType(
            type="recommendation.generated",
            topic="recommendation-events",
            key="user_id",
            source="/recommendation",
        ),
        EventType(
            type="notification.requested",
            exchange="notifications",
            routing_key="notify.recommendation",
            key="user_id",
            source="/notification-dispatch",
        ),
        EventType(
            type="payment.captured",
            topic="payment-events",
            key="subscription_id",
            source="/subscription",
        ),
    ),
)
