-- no-transaction
-- Decisions per shopper. A shopper is one person per store with contact points
-- (email now; phones and push endpoints later), consents and preferences; orders end
-- alerts and hold back recent purchasers; restocks are planned by the workers page by
-- page under the store's release policy (waves, early access, quiet hours, caps,
-- holdouts), and every decision — sent, deferred or held back — is an outbox row.
--
-- SQLite cannot alter CHECK or UNIQUE constraints in place, so the demand and outbox
-- tables are rebuilt the documented way: foreign keys off, new table, copy, drop,
-- rename, foreign_key_check, all in one transaction (hence no-transaction above).
PRAGMA foreign_keys = OFF;
BEGIN;

-- Store rules (JSON, see restock_core::policy::StorePolicy) and a product's override
-- of how its restocks are released (restock_core::policy::ReleasePolicy).
ALTER TABLE stores ADD COLUMN policy TEXT NOT NULL DEFAULT '{}';
ALTER TABLE products ADD COLUMN release_policy TEXT;
-- 'deny' (sold from stock), 'preorder' or 'backorder': the latter two never fire.
ALTER TABLE variants ADD COLUMN inventory_policy TEXT NOT NULL DEFAULT 'deny';
-- Units of a location's quantity reserved or committed: not available to sell.
ALTER TABLE stock_levels ADD COLUMN reserved INTEGER NOT NULL DEFAULT 0;

-- Markets: which locations serve which market. A sign-up naming a market waits for
-- stock at those locations; each market has its own availability state.
CREATE TABLE market_locations (
    store_id INTEGER NOT NULL REFERENCES stores(id),
    market TEXT NOT NULL,
    location TEXT NOT NULL,
    PRIMARY KEY (store_id, market, location)
);
CREATE TABLE variant_markets (
    variant_id INTEGER NOT NULL REFERENCES variants(id),
    market TEXT NOT NULL,
    store_id INTEGER NOT NULL REFERENCES stores(id),
    available INTEGER NOT NULL DEFAULT 0,
    in_stock BOOLEAN NOT NULL DEFAULT FALSE,
    state_changed_at INTEGER,
    PRIMARY KEY (variant_id, market)
);
-- NULL: the variant as a whole (every location).
ALTER TABLE availability_transitions ADD COLUMN market TEXT;

-- A restock is planned by the workers, not in the stock update's transaction: its
-- plan state, the position reached in the waiting list, the wave, and the running
-- counts that keep the holdout share exact. The policy in force is snapshotted.
ALTER TABLE restock_events ADD COLUMN market TEXT;
ALTER TABLE restock_events ADD COLUMN policy TEXT;
-- 'pending' (plan now), 'waiting' (next wave or end of early access at next_run_at),
-- 'done' (everyone decided), 'sold_out' (stopped: the rest wait for the next restock),
-- 'superseded' (sold out and restocked again before it was released in full: the
-- newer restock carries on), 'failed' (gave up after repeated errors; last_error says why).
ALTER TABLE restock_events ADD COLUMN plan_state TEXT NOT NULL DEFAULT 'done';
ALTER TABLE restock_events ADD COLUMN next_run_at INTEGER;
ALTER TABLE restock_events ADD COLUMN wave INTEGER NOT NULL DEFAULT 0;
ALTER TABLE restock_events ADD COLUMN cursor_at INTEGER;
ALTER TABLE restock_events ADD COLUMN cursor_id INTEGER;
ALTER TABLE restock_events ADD COLUMN lease_until INTEGER;
ALTER TABLE restock_events ADD COLUMN plan_attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE restock_events ADD COLUMN eligible_count INTEGER NOT NULL DEFAULT 0;
ALTER TABLE restock_events ADD COLUMN held_out_count INTEGER NOT NULL DEFAULT 0;
ALTER TABLE restock_events ADD COLUMN held_count INTEGER NOT NULL DEFAULT 0;
ALTER TABLE restock_events ADD COLUMN deferred_count INTEGER NOT NULL DEFAULT 0;
ALTER TABLE restock_events ADD COLUMN last_error TEXT;
ALTER TABLE restock_events ADD COLUMN finished_at INTEGER;
CREATE INDEX restock_events_plan ON restock_events (next_run_at)
    WHERE plan_state IN ('pending', 'waiting');
-- Planning asks whether the product had another restock lately (an alert about it
-- may still be on its way to someone).
CREATE INDEX restock_events_product ON restock_events (product_id, created_at);

CREATE TABLE restock_waves (
    restock_event_id INTEGER NOT NULL REFERENCES restock_events(id),
    wave INTEGER NOT NULL,
    started_at INTEGER NOT NULL,
    available INTEGER NOT NULL,
    -- Sends allowed in this wave; NULL when everyone is told at once.
    capacity INTEGER,
    planned INTEGER NOT NULL DEFAULT 0,
    held INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (restock_event_id, wave)
);

-- Shoppers: one person per store. Subscribers that differed only in the case of
-- their address are one shopper now (the lowest id is kept).
CREATE TABLE shoppers (
    id INTEGER PRIMARY KEY,
    store_id INTEGER NOT NULL REFERENCES stores(id),
    -- The merchant's own customer id, when known.
    customer_id TEXT,
    tier TEXT,
    time_zone TEXT,
    preferred_channel TEXT,
    -- Opted out of everything: held back from every alert until opted in again.
    opted_out_at INTEGER,
    -- JSON {"categories": [...], "channels": [...]} of narrower opt-outs; NULL: none.
    opt_outs TEXT,
    -- Latest order seen, so planning looks up purchases only for recent buyers.
    last_order_at INTEGER,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE UNIQUE INDEX shoppers_customer ON shoppers (store_id, customer_id)
    WHERE customer_id IS NOT NULL;
CREATE INDEX shoppers_tier ON shoppers (store_id, tier) WHERE tier IS NOT NULL;

CREATE TEMP TABLE shopper_keys AS
    SELECT store_id, lower(email) AS k, MIN(id) AS keeper, MAX(suppressed_at) AS suppressed_at
    FROM subscribers GROUP BY store_id, lower(email);
CREATE INDEX temp.shopper_keys_k ON shopper_keys (store_id, k);
CREATE TEMP TABLE shopper_map AS
    SELECT b.id AS old_id, k.keeper AS new_id
    FROM subscribers b JOIN shopper_keys k ON k.store_id = b.store_id AND k.k = lower(b.email);
CREATE INDEX temp.shopper_map_old ON shopper_map (old_id);

INSERT INTO shoppers (id, store_id, created_at, updated_at)
    SELECT b.id, b.store_id, b.created_at, b.created_at
    FROM subscribers b JOIN shopper_keys k ON k.keeper = b.id;

-- Where a shopper is reached. address keeps the spelling given (it is what is sent
-- to); address_key is the identity (an email's is case-insensitive).
CREATE TABLE contact_points (
    id INTEGER PRIMARY KEY,
    store_id INTEGER NOT NULL REFERENCES stores(id),
    shopper_id INTEGER NOT NULL REFERENCES shoppers(id),
    channel TEXT NOT NULL,
    address TEXT NOT NULL,
    address_key TEXT NOT NULL,
    -- The latest consent state for this channel at this address (history: consents).
    consent_at INTEGER,
    consent_withdrawn_at INTEGER,
    -- Set when a send failed permanently (bounce): nothing more is sent here.
    suppressed_at INTEGER,
    suppressed_reason TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    CONSTRAINT contact_points_identity UNIQUE (store_id, channel, address_key)
);
CREATE INDEX contact_points_shopper ON contact_points (shopper_id);
INSERT INTO contact_points (id, store_id, shopper_id, channel, address, address_key, consent_at,
                            suppressed_at, suppressed_reason, created_at, updated_at)
    SELECT b.id, b.store_id, b.id, 'email', b.email, k.k, b.created_at, k.suppressed_at,
           CASE WHEN k.suppressed_at IS NOT NULL THEN COALESCE(b.suppressed_reason, 'bounced') END,
           b.created_at, b.created_at
    FROM subscribers b JOIN shopper_keys k ON k.keeper = b.id;

-- Consent records: what the shopper agreed to (or withdrew), the words shown, when,
-- and where from ('widget', 'api', 'chat_agent', 'import', 'link', 'migration').
CREATE TABLE consents (
    id INTEGER PRIMARY KEY,
    store_id INTEGER NOT NULL REFERENCES stores(id),
    shopper_id INTEGER NOT NULL REFERENCES shoppers(id),
    contact_point_id INTEGER REFERENCES contact_points(id),
    channel TEXT NOT NULL,
    granted BOOLEAN NOT NULL,
    text TEXT NOT NULL DEFAULT '',
    source TEXT NOT NULL,
    ip TEXT,
    user_agent TEXT,
    at INTEGER NOT NULL
);
CREATE INDEX consents_shopper ON consents (shopper_id, id);
-- Everyone on record signed up through the storefront before consent records existed.
INSERT INTO consents (store_id, shopper_id, contact_point_id, channel, granted, source, at)
    SELECT store_id, shopper_id, id, 'email', TRUE, 'migration', created_at FROM contact_points;

CREATE TABLE subscriptions_new (
    id INTEGER PRIMARY KEY,
    store_id INTEGER NOT NULL REFERENCES stores(id),
    shopper_id INTEGER NOT NULL REFERENCES shoppers(id),
    product_id INTEGER NOT NULL REFERENCES products(id),
    -- NULL: any variant of the product.
    variant_id INTEGER REFERENCES variants(id),
    -- NULL: stock at any location counts.
    market TEXT,
    status TEXT NOT NULL CHECK (status IN ('waiting', 'notified', 'unsubscribed', 'cancelled', 'purchased', 'expired')),
    source TEXT NOT NULL DEFAULT 'storefront',
    -- The place in the waiting list.
    created_at INTEGER NOT NULL,
    -- The interest window counts from the latest sign-up.
    last_signup_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    notified_at INTEGER,
    ended_at INTEGER
);
INSERT INTO subscriptions_new (id, store_id, shopper_id, product_id, variant_id, market, status, source,
                               created_at, last_signup_at, updated_at, notified_at, ended_at)
    SELECT s.id, s.store_id, m.new_id, s.product_id, s.variant_id, NULL, s.status, s.source,
           s.created_at, s.updated_at, s.updated_at, s.notified_at, s.unsubscribed_at
    FROM subscriptions s JOIN shopper_map m ON m.old_id = s.subscriber_id;
-- Shoppers merged above may now wait twice for one thing: the earliest sign-up stays.
UPDATE subscriptions_new SET status = 'cancelled', ended_at = updated_at
WHERE status = 'waiting' AND EXISTS (
    SELECT 1 FROM subscriptions_new o
    WHERE o.shopper_id = subscriptions_new.shopper_id AND o.product_id = subscriptions_new.product_id
      AND COALESCE(o.variant_id, 0) = COALESCE(subscriptions_new.variant_id, 0)
      AND o.status = 'waiting' AND o.id < subscriptions_new.id);
DROP TABLE subscriptions;
ALTER TABLE subscriptions_new RENAME TO subscriptions;
-- One waiting sign-up per shopper and target: a repeated sign-up merges. Ended ones
-- stay as history; signing up again after one ended starts a new place in the list.
CREATE UNIQUE INDEX subscriptions_waiting_target
    ON subscriptions (shopper_id, product_id, COALESCE(variant_id, 0), COALESCE(market, ''))
    WHERE status = 'waiting';
-- The planner pages one variant's (or product's) waiting list in sign-up order.
CREATE INDEX subscriptions_waiting_variant
    ON subscriptions (variant_id, COALESCE(market, ''), created_at, id)
    WHERE status = 'waiting' AND variant_id IS NOT NULL;
CREATE INDEX subscriptions_waiting_product
    ON subscriptions (product_id, COALESCE(market, ''), created_at, id)
    WHERE status = 'waiting' AND variant_id IS NULL;
CREATE INDEX subscriptions_store ON subscriptions (store_id, id);
CREATE INDEX subscriptions_shopper ON subscriptions (shopper_id, product_id);
CREATE INDEX subscriptions_expiry ON subscriptions (store_id, last_signup_at)
    WHERE status = 'waiting';

-- The outbox, one row per decision: an alert or reminder to send (pending; due_at
-- later than planned_at when deferred, with the reason), sent, failed, dead, skipped
-- at send time, or held back at planning (held, with the reason). No foreign keys:
-- the planner copies ids from rows it has just read, and two per-row checks would
-- double the cost of planning a large restock.
CREATE TABLE notifications_new (
    id INTEGER PRIMARY KEY,
    store_id INTEGER NOT NULL,
    restock_event_id INTEGER NOT NULL,
    shopper_id INTEGER NOT NULL,
    -- Where the shopper stood in the waiting list; a product-level sign-up answered
    -- by the same message is extra_subscription_id.
    subscription_id INTEGER NOT NULL,
    extra_subscription_id INTEGER,
    variant_id INTEGER NOT NULL,
    -- 'alert', 'reminder', or 'duplicate' (a second message to one person from before
    -- shoppers were one per store; history only).
    purpose TEXT NOT NULL DEFAULT 'alert' CHECK (purpose IN ('alert', 'reminder', 'duplicate')),
    channel TEXT NOT NULL DEFAULT 'email',
    contact_point_id INTEGER,
    recipient TEXT NOT NULL,
    wave INTEGER NOT NULL DEFAULT 1,
    state TEXT NOT NULL CHECK (state IN ('pending', 'running', 'done', 'failed', 'dead', 'skipped', 'held')),
    -- Why it is held, skipped or deferred (a code: opted_out, holdout, quiet_hours, ...).
    reason TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    due_at INTEGER NOT NULL,
    lease_until INTEGER,
    last_error TEXT,
    planned_at INTEGER NOT NULL,
    sent_at INTEGER,
    updated_at INTEGER NOT NULL
);
CREATE TEMP TABLE first_message AS
    SELECT n.restock_event_id, m.new_id AS shopper_id, MIN(n.id) AS id
    FROM notifications n JOIN shopper_map m ON m.old_id = n.subscriber_id
    GROUP BY n.restock_event_id, m.new_id;
CREATE INDEX temp.first_message_id ON first_message (id);
INSERT INTO notifications_new (id, store_id, restock_event_id, shopper_id, subscription_id, variant_id,
                               purpose, channel, contact_point_id, recipient, wave, state, attempts,
                               due_at, lease_until, last_error, planned_at, sent_at, updated_at)
    SELECT n.id, n.store_id, n.restock_event_id, m.new_id, n.subscription_id, n.variant_id,
           CASE WHEN f.id IS NULL THEN 'duplicate' ELSE 'alert' END, n.channel, m.new_id, n.recipient, 1,
           n.state, n.attempts, n.due_at, n.lease_until, n.last_error, n.planned_at, n.sent_at, n.updated_at
    FROM notifications n JOIN shopper_map m ON m.old_id = n.subscriber_id
    LEFT JOIN first_message f ON f.id = n.id;
DROP TABLE notifications;
ALTER TABLE notifications_new RENAME TO notifications;
-- The promise: one alert (and at most one reminder) per shopper per restock.
CREATE UNIQUE INDEX notifications_plan_key ON notifications (restock_event_id, shopper_id, purpose);
CREATE INDEX notifications_due ON notifications (due_at, id) WHERE state = 'pending';
CREATE INDEX notifications_lease ON notifications (lease_until) WHERE state = 'running';
CREATE INDEX notifications_store_state ON notifications (store_id, state, id);
-- A shopper's messages: their history, the frequency cap, alerts in flight.
CREATE INDEX notifications_shopper ON notifications (shopper_id, id);

DROP TABLE subscribers;
DROP TABLE temp.first_message;
DROP TABLE temp.shopper_map;
DROP TABLE temp.shopper_keys;

-- Orders: they end the buyer's alerts for what they bought, hold back recent
-- purchasers, count against stock the sources have not reported yet, and are kept
-- for attribution. Idempotent on the merchant's order id.
CREATE TABLE orders (
    id INTEGER PRIMARY KEY,
    store_id INTEGER NOT NULL REFERENCES stores(id),
    order_ref TEXT NOT NULL,
    shopper_id INTEGER REFERENCES shoppers(id),
    customer_email TEXT,
    customer_id TEXT,
    source TEXT NOT NULL,
    currency TEXT,
    market TEXT,
    ordered_at INTEGER NOT NULL,
    received_at INTEGER NOT NULL,
    CONSTRAINT orders_store_ref UNIQUE (store_id, order_ref)
);
CREATE TABLE order_lines (
    id INTEGER PRIMARY KEY,
    order_id INTEGER NOT NULL REFERENCES orders(id),
    store_id INTEGER NOT NULL,
    shopper_id INTEGER,
    -- NULL when the SKU is not in the catalog (kept for attribution all the same).
    variant_id INTEGER,
    product_id INTEGER,
    sku TEXT NOT NULL,
    quantity INTEGER NOT NULL,
    price_minor INTEGER,
    market TEXT,
    ordered_at INTEGER NOT NULL
);
CREATE INDEX order_lines_variant ON order_lines (variant_id, ordered_at) WHERE variant_id IS NOT NULL;
CREATE INDEX order_lines_shopper ON order_lines (shopper_id, ordered_at) WHERE shopper_id IS NOT NULL;
CREATE INDEX order_lines_order ON order_lines (order_id);

PRAGMA foreign_key_check;
COMMIT;
PRAGMA foreign_keys = ON;
