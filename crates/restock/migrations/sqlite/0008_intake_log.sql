-- The intake log: every delivery a source made, as it arrived, with its cursor and
-- what became of it.
-- Kept for retention.intake_log_hours. Kept in step in both flavours.

CREATE TABLE intake_log (
    id INTEGER PRIMARY KEY,
    store_id INTEGER NOT NULL REFERENCES stores(id),
    source TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    -- json (a document as received), csv (the lines of an import batch), messages (a
    -- stream's messages, a JSON array of their texts) or rows (a poller's records that
    -- differed from the store, a JSON array of their mapped fields).
    format TEXT NOT NULL,
    -- Where the source stood after this delivery (a sequence, an ETag, …), if it has one.
    cursor TEXT,
    payload TEXT NOT NULL,
    -- The payload's size as received; when over intake.log_max_bytes only its start
    -- is kept and truncated is set.
    bytes INTEGER NOT NULL,
    truncated BOOLEAN NOT NULL DEFAULT FALSE,
    -- What became of it, as JSON: {"applied": n, "stale": n, "rejected": n} for
    -- stock, {"result": …} for a webhook (its answer, or the error code).
    outcome TEXT NOT NULL
);
CREATE INDEX intake_log_source ON intake_log (store_id, source, id);
CREATE INDEX intake_log_received ON intake_log (received_at);
