-- Read model of the subscription projection, rebuildable from the events table.
-- IF NOT EXISTS for the same reason as 0001.
CREATE TABLE IF NOT EXISTS subscription_overview (
    subscription_id text PRIMARY KEY,
    user_id         text NOT NULL,
    plan            text NOT NULL,
    status          text NOT NULL,
    payments        integer NOT NULL DEFAULT 0,
    paid_cents      bigint NOT NULL DEFAULT 0
);
