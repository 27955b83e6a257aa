-- A vote's window rows are written once, in the transaction that decides it, under the
-- vote's locks (a vote already decided is never judged again), so no key is needed to
-- keep them unique; the index on the vote id cost more on every insert than any lookup.
ALTER TABLE rate_events DROP CONSTRAINT rate_events_pkey;
