-- The reference apps' read models, each written only by its own handler.
-- IF NOT EXISTS: a database from before these moved out of Tide's own migrations has
-- them already, and adopts them unchanged.
CREATE TABLE IF NOT EXISTS content_catalog (
    video_id text PRIMARY KEY,
    title    text NOT NULL,
    genres   text[] NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS viewer_profiles (
    user_id        text PRIMARY KEY,
    watched        integer NOT NULL DEFAULT 0,
    watched_s      double precision NOT NULL DEFAULT 0,
    ratings        integer NOT NULL DEFAULT 0,
    rating_sum     integer NOT NULL DEFAULT 0,
    last_video_id  text
);
CREATE TABLE IF NOT EXISTS viewing_sessions (
    session_id text PRIMARY KEY,
    user_id    text NOT NULL,
    video_id   text NOT NULL,
    quality    text,
    last_seen  timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS badges (
    user_id    text NOT NULL,
    badge      text NOT NULL,
    awarded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, badge)
);
CREATE TABLE IF NOT EXISTS completions (
    user_id text PRIMARY KEY,
    count   integer NOT NULL
);
CREATE TABLE IF NOT EXISTS notifications_sent (
    event_id text PRIMARY KEY,
    user_id  text NOT NULL,
    channel  text NOT NULL,
    title    text NOT NULL,
    sent_at  timestamptz NOT NULL DEFAULT now()
);
