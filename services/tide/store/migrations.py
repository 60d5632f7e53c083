"""Tide's database schema, as numbered migrations applied once each, safely in parallel."""

from __future__ import annotations

import psycopg

from tide.errors import pg_conninfo

# Serialises concurrent `tide db migrate` runs (several pods starting at once).
_LOCK = 7_305_001

MIGRATIONS: tuple[tuple[int, str], ...] = (
    (
        1,
        """
        CREATE TABLE events (
            position    bigserial PRIMARY KEY,
            stream_id   text        NOT NULL,
            version     integer     NOT NULL CHECK (version > 0),
            event_id    uuid        NOT NULL UNIQUE,
            type        text        NOT NULL,
            data        jsonb       NOT NULL,
            metadata    jsonb       NOT NULL DEFAULT '{}',
            recorded_at timestamptz NOT NULL DEFAULT now(),
            UNIQUE (stream_id, version)
        );
        CREATE TABLE snapshots (
            stream_id text        PRIMARY KEY,
            version   integer     NOT NULL,
            state     jsonb       NOT NULL,
            taken_at  timestamptz NOT NULL DEFAULT now()
        );
        CREATE TABLE projection_checkpoints (
            projection text        PRIMARY KEY,
            position   bigint      NOT NULL,
            updated_at timestamptz NOT NULL DEFAULT now()
        );
        CREATE TABLE outbox (
            id         bigserial   PRIMARY KEY,
            event_id   uuid        NOT NULL UNIQUE,
            type       text        NOT NULL,
            envelope   jsonb       NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now()
        );
        CREATE TABLE processed_events (
            consumer     text        NOT NULL,
            event_id     text        NOT NULL,
            processed_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (consumer, event_id)
        );
        """,
    ),
    (
        2,
        """
        -- The reference apps' read models (each written only by its own handler).
        CREATE TABLE content_catalog (
            video_id text PRIMARY KEY,
            title    text NOT NULL,
            genres   text[] NOT NULL DEFAULT '{}'
        );
        CREATE TABLE viewer_profiles (
            user_id        text PRIMARY KEY,
            watched        integer NOT NULL DEFAULT 0,
            watched_s      double precision NOT NULL DEFAULT 0,
            ratings        integer NOT NULL DEFAULT 0,
            rating_sum     integer NOT NULL DEFAULT 0,
            last_video_id  text
        );
        CREATE TABLE viewing_sessions (
            session_id text PRIMARY KEY,
            user_id    text NOT NULL,
            video_id   text NOT NULL,
            quality    text,
            last_seen  timestamptz NOT NULL
        );
        CREATE TABLE badges (
            user_id    text NOT NULL,
            badge      text NOT NULL,
            awarded_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (user_id, badge)
        );
        CREATE TABLE completions (
            user_id text PRIMARY KEY,
            count   integer NOT NULL
        );
        CREATE TABLE notifications_sent (
            event_id text PRIMARY KEY,
            user_id  text NOT NULL,
            channel  text NOT NULL,
            title    text NOT NULL,
            sent_at  timestamptz NOT NULL DEFAULT now()
        );
        """,
    ),
    (
        3,
        """
        -- Read model of the subscription projection (rebuildable from the events table).
        CREATE TABLE subscription_overview (
            subscription_id text PRIMARY KEY,
            user_id         text NOT NULL,
            plan            text NOT NULL,
            status          text NOT NULL,
            payments        integer NOT NULL DEFAULT 0,
            paid_cents      bigint NOT NULL DEFAULT 0
        );
        """,
    ),
    (
        4,
        """
        -- Outbox rows that can never be published, with why; the relay goes on without them.
        CREATE TABLE outbox_dead_letters (
            id         bigint      PRIMARY KEY,
            event_id   uuid        NOT NULL,
            type       text        NOT NULL,
            envelope   jsonb       NOT NULL,
            reason     text        NOT NULL,
            failed_at  timestamptz NOT NULL DEFAULT now()
        );
        """,
    ),
    (
        5,
        """
        -- Pruning each group's processed marks past its retention (tide.store.processed).
        CREATE INDEX processed_events_consumer_age ON processed_events (consumer, processed_at);
        """,
    ),
    (
        6,
        """
        -- Whose marks a row is: a service's role sees and writes only the rows of its own
        -- consumer groups and queues (tide.store.grants records them). The owner, who
        -- migrates, and superusers are not bound by the policy.
        CREATE TABLE processed_event_owners (
            consumer text PRIMARY KEY,
            role     name NOT NULL
        );
        ALTER TABLE processed_events ENABLE ROW LEVEL SECURITY;
        CREATE POLICY own_consumers ON processed_events
            USING (EXISTS (
                SELECT FROM processed_event_owners o
                WHERE o.consumer = processed_events.consumer AND o.role = current_user
            ));
        """,
    ),
)


def migrate(dsn: str) -> list[int]:
    """Apply the migrations this database lacks; returns the versions applied now."""
    applied: list[int] = []
    with psycopg.connect(pg_conninfo(dsn), autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK,))
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS tide_schema_migrations ("
                " version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {row[0] for row in conn.execute("SELECT version FROM tide_schema_migrations")}
            for version, sql in MIGRATIONS:
                if version in done:
                    continue
                with conn.transaction():
                    conn.execute(sql.encode())  # literal DDL from this module, no parameters
                    conn.execute(
                        "INSERT INTO tide_schema_migrations (version) VALUES (%s)", (version,)
                    )
                applied.append(version)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK,))
    return applied
