-- Once the prizes are delivered, staff erase every entrant's name and phone number of a
-- poll: each entry keeps only their masked forms, and its draw records when and by whom.
-- Nullable columns: pods of the previous release, which name their columns, read on.
ALTER TABLE draws
    ADD COLUMN details_erased_at timestamptz,
    ADD COLUMN details_erased_by text;
