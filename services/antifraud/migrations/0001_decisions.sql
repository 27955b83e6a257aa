-- One decision per vote id, forever: a replayed submission gets this row back, so it is
-- republished unchanged and never judged twice. Also answers GET /api/v1/votes/{id}.
CREATE TABLE decisions (
    vote_id     text PRIMARY KEY,
    poll_id     text NOT NULL,
    voter_id    text NOT NULL,
    choice      text NOT NULL,
    verdict     text NOT NULL CHECK (verdict IN ('accepted', 'rejected')),
    reason      text,
    day         date,
    received_at timestamptz NOT NULL,
    decided_at  timestamptz NOT NULL,
    CHECK ((verdict = 'accepted') = (reason IS NULL))
);

-- Accepted votes per poll, voter and voting day: the daily limit.
CREATE TABLE daily_accepted (
    poll_id  text NOT NULL,
    voter_id text NOT NULL,
    day      date NOT NULL,
    n        integer NOT NULL CHECK (n >= 0),
    PRIMARY KEY (poll_id, voter_id, day)
);

-- Captcha ids already spent by a decided vote: each id counts for one vote at most.
CREATE TABLE used_captchas (
    fingerprint text PRIMARY KEY,
    vote_id     text NOT NULL,
    received_at timestamptz NOT NULL
);

-- Submissions inside the rate-limit windows, by scope (voter, ip, subnet) and key.
CREATE TABLE rate_events (
    poll_id     text NOT NULL,
    scope       text NOT NULL,
    key         text NOT NULL,
    received_at timestamptz NOT NULL,
    vote_id     text NOT NULL,
    PRIMARY KEY (vote_id, scope)
);
CREATE INDEX rate_events_window ON rate_events (poll_id, scope, key, received_at);
