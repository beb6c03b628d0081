-- Sources: every place inventory and order events come from, with what Restock
-- knows of each one's health, and dead letters that count repeats and name the
-- SKUs they hold back. Kept in step in both flavours.

CREATE TABLE sources (
    id INTEGER PRIMARY KEY,
    store_id INTEGER NOT NULL REFERENCES stores(id),
    -- The merchant's name for it, unique in the store. The built-in push sources
    -- (api, shopify, woocommerce, csv) appear under their own names.
    name TEXT NOT NULL,
    -- sql, http, websocket, jetstream; or api, shopify, woocommerce, csv.
    kind TEXT NOT NULL,
    -- The kind's settings as JSON, sealed: they hold connection strings and tokens.
    config TEXT NOT NULL DEFAULT '',
    -- Validation profile (JSON): what to do with unknown SKUs, negative quantities,
    -- duplicate lines.
    profile TEXT NOT NULL DEFAULT '{}',
    enabled BOOLEAN NOT NULL DEFAULT TRUE,
    -- Pull sources: seconds between runs.
    interval_secs INTEGER NOT NULL DEFAULT 900,
    -- Where the source left off (kind-specific: a timestamp, a sequence, an ETag).
    cursor TEXT,
    -- The instance running it, and until when its claim holds.
    lease_owner TEXT,
    lease_until INTEGER,
    next_run_at INTEGER NOT NULL DEFAULT 0,
    last_run_at INTEGER,
    last_success_at INTEGER,
    -- Observed time of the newest change the source reported (its lag is now minus it).
    last_event_at INTEGER,
    last_error_at INTEGER,
    last_error TEXT,
    consecutive_failures INTEGER NOT NULL DEFAULT 0,
    -- The last runs' outcomes, newest last, one letter each (s: success, f: failure),
    -- at most 20: the error rate is read off it.
    recent TEXT NOT NULL DEFAULT '',
    runs INTEGER NOT NULL DEFAULT 0,
    applied INTEGER NOT NULL DEFAULT 0,
    rejected INTEGER NOT NULL DEFAULT 0,
    -- Pull sources stop being run until then after repeated failures (circuit breaker).
    breaker_open_until INTEGER,
    -- When the source was found stale (no success within its staleness limit); NULL
    -- while it is fresh. The stale event is raised once per episode.
    stale_since INTEGER,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    CONSTRAINT sources_store_name UNIQUE (store_id, name)
);

-- Dead letters: the same rejected payload arriving again counts on its first row.
ALTER TABLE rejections ADD COLUMN fingerprint TEXT;
ALTER TABLE rejections ADD COLUMN last_seen_at INTEGER;
ALTER TABLE rejections ADD COLUMN seen_count INTEGER NOT NULL DEFAULT 1;
CREATE UNIQUE INDEX rejections_fingerprint ON rejections (fingerprint);

-- The SKUs a rejected payload names, so its impact (shoppers waiting on them) can be
-- ranked and a fixed SKU's parked updates found.
CREATE TABLE rejection_skus (
    rejection_id INTEGER NOT NULL REFERENCES rejections(id) ON DELETE CASCADE,
    store_id INTEGER NOT NULL,
    sku TEXT NOT NULL,
    PRIMARY KEY (rejection_id, sku)
);
CREATE INDEX rejection_skus_sku ON rejection_skus (store_id, sku);
