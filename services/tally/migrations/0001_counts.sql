-- Every counted vote, once: the primary key is what makes counting idempotent.
CREATE TABLE counted_votes (
    vote_id     text PRIMARY KEY,
    poll_id     text NOT NULL,
    choice      text NOT NULL,
    received_at timestamptz NOT NULL,
    counted_at  timestamptz NOT NULL DEFAULT now()
);

-- Live totals, one row per poll and option, moved by a batch's sums (never per vote).
CREATE TABLE counts (
    poll_id    text NOT NULL,
    choice     text NOT NULL,
    n          bigint NOT NULL CHECK (n >= 0),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (poll_id, choice)
);

-- Where `reconcile` rebuilds counts from the Kafka log to compare with the live ones.
CREATE TABLE recount (
    run_id  text NOT NULL,
    poll_id text NOT NULL,
    choice  text NOT NULL,
    n       bigint NOT NULL,
    PRIMARY KEY (run_id, poll_id, choice)
);
