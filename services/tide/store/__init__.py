"""PostgreSQL: migrations, the event store, the outbox, and processed-event records."""
