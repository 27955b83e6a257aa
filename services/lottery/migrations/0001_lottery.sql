-- Days voted: one row per (poll, voter id, poll-day) with an accepted vote before the
-- close. The primary key makes recording idempotent under replays and redeliveries.
CREATE TABLE voter_days (
    poll_id     text NOT NULL,
    voter_id    text NOT NULL,
    day         date NOT NULL,
    vote_id     text NOT NULL,            -- the first accepted vote seen for that day
    received_at timestamptz NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (poll_id, voter_id, day)
);

-- The secret seed of each poll's draw, fixed once when voting opens and never replaced.
-- The seed is sealed with the PII keyring until the draw reveals it; entry_key_id names
-- the keyring key the poll's entry ids are derived from, so rotating PII_KEY never
-- changes an entry id.
CREATE TABLE commitments (
    poll_id      text PRIMARY KEY,
    seed_sealed  bytea NOT NULL,
    commitment   text NOT NULL CHECK (commitment ~ '^[0-9a-f]{64}$'),
    entry_key_id text NOT NULL,
    fixed_at     timestamptz NOT NULL DEFAULT now()
);

-- One entry per normalised mobile number per poll; name and phone sealed (AES-GCM),
-- bound by associated data to this poll, entry and field.
CREATE TABLE entries (
    poll_id      text NOT NULL REFERENCES commitments (poll_id),
    entry_id     text NOT NULL,
    name_sealed  bytea NOT NULL,
    phone_sealed bytea NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (poll_id, entry_id)
);

-- Which voter ids registered which number: one number per voter id per poll. An entry's
-- weight is the distinct days of all its linked voter ids.
CREATE TABLE entry_voters (
    poll_id   text NOT NULL,
    voter_id  text NOT NULL,
    entry_id  text NOT NULL,
    linked_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (poll_id, voter_id),
    FOREIGN KEY (poll_id, entry_id) REFERENCES entries (poll_id, entry_id)
);
CREATE INDEX entry_voters_by_entry ON entry_voters (poll_id, entry_id);

-- The one draw of a poll. `record` is the audit record's JSON exactly as first
-- published, so every later answer is byte for byte the same; `ranked` holds the masked
-- winners and reserves as they were at the draw, for the public page.
CREATE TABLE draws (
    poll_id  text PRIMARY KEY REFERENCES commitments (poll_id),
    record   text NOT NULL,
    ranked   jsonb NOT NULL,
    drawn_at timestamptz NOT NULL,
    drawn_by text NOT NULL
);

-- Every staff call: who did what to which poll, and how it ended. Append-only.
CREATE TABLE staff_audit (
    id      bigserial PRIMARY KEY,
    at      timestamptz NOT NULL DEFAULT now(),
    staff   text NOT NULL,
    action  text NOT NULL,
    poll_id text,
    outcome text NOT NULL
);
CREATE INDEX staff_audit_by_poll ON staff_audit (poll_id, at);
