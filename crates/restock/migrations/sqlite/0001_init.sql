-- Restock schema, SQLite flavour. Kept column-for-column identical to the PostgreSQL
-- flavour so one set of queries serves both. Times are milliseconds since the epoch;
-- money is integer minor units (cents) so no float ever touches a price.

-- Per-installation secrets (the link-signing key), created on first start so a
-- fresh install needs no setup and several instances on one database agree.
CREATE TABLE instance_secrets (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE stores (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    slug TEXT NOT NULL UNIQUE,
    -- Public key the storefront widget sends; safe to embed in pages.
    publishable_key TEXT NOT NULL UNIQUE,
    -- Shopify webhook shared secret (HMAC key); NULL means Shopify is not connected.
    shopify_secret TEXT,
    -- JSON array of origins allowed to call the storefront API from a browser.
    allowed_origins TEXT NOT NULL DEFAULT '[]',
    min_stock INTEGER NOT NULL DEFAULT 0,
    notify_threshold INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL
);

-- Merchant API keys: only a SHA-256 of the key is kept; the key is shown once.
CREATE TABLE api_keys (
    id INTEGER PRIMARY KEY,
    store_id INTEGER NOT NULL REFERENCES stores(id),
    key_hash TEXT NOT NULL UNIQUE,
    prefix TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
);

CREATE TABLE categories (
    id INTEGER PRIMARY KEY,
    store_id INTEGER NOT NULL REFERENCES stores(id),
    handle TEXT NOT NULL,
    name TEXT NOT NULL,
    min_stock INTEGER,
    notify_threshold INTEGER,
    CONSTRAINT categories_store_handle UNIQUE (store_id, handle)
);

CREATE TABLE products (
    id INTEGER PRIMARY KEY,
    store_id INTEGER NOT NULL REFERENCES stores(id),
    external_id TEXT NOT NULL,
    title TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    image_url TEXT,
    url TEXT NOT NULL,
    category_id INTEGER REFERENCES categories(id),
    price_minor INTEGER NOT NULL,
    currency TEXT NOT NULL,
    min_stock INTEGER,
    notify_threshold INTEGER,
    updated_at INTEGER NOT NULL,
    CONSTRAINT products_store_external UNIQUE (store_id, external_id)
);

CREATE TABLE variants (
    id INTEGER PRIMARY KEY,
    store_id INTEGER NOT NULL REFERENCES stores(id),
    product_id INTEGER NOT NULL REFERENCES products(id),
    sku TEXT NOT NULL,
    title TEXT NOT NULL DEFAULT '',
    -- JSON object of option name to value, e.g. {"size":"M","colour":"red"}.
    options TEXT NOT NULL DEFAULT '{}',
    price_minor INTEGER,
    image_url TEXT,
    url TEXT,
    min_stock INTEGER,
    notify_threshold INTEGER,
    -- Shopify's inventory_item_id, to route inventory_levels/update webhooks.
    inventory_item_id TEXT,
    -- Denormalised sum over locations and the state machine's state, kept in the
    -- same transaction as the levels.
    available INTEGER NOT NULL DEFAULT 0,
    in_stock BOOLEAN NOT NULL DEFAULT FALSE,
    available_until INTEGER,
    state_changed_at INTEGER,
    updated_at INTEGER NOT NULL,
    CONSTRAINT variants_store_sku UNIQUE (store_id, sku)
);
CREATE UNIQUE INDEX variants_inventory_item ON variants (store_id, inventory_item_id)
    WHERE inventory_item_id IS NOT NULL;
CREATE INDEX variants_product ON variants (product_id);
-- Temporary stock that has run out is re-judged by a sweep; this finds it.
CREATE INDEX variants_expiring ON variants (available_until) WHERE available_until IS NOT NULL;

CREATE TABLE stock_levels (
    variant_id INTEGER NOT NULL REFERENCES variants(id),
    location TEXT NOT NULL,
    store_id INTEGER NOT NULL REFERENCES stores(id),
    available INTEGER NOT NULL,
    incoming INTEGER,
    incoming_at INTEGER,
    available_until INTEGER,
    -- Version of the update that set this level; older updates never overwrite it.
    observed_at INTEGER NOT NULL,
    sequence INTEGER,
    source TEXT NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (variant_id, location)
);

CREATE TABLE availability_transitions (
    id INTEGER PRIMARY KEY,
    store_id INTEGER NOT NULL REFERENCES stores(id),
    variant_id INTEGER NOT NULL REFERENCES variants(id),
    to_state TEXT NOT NULL CHECK (to_state IN ('in_stock', 'out_of_stock')),
    quantity INTEGER NOT NULL,
    cause TEXT NOT NULL,
    at INTEGER NOT NULL
);
CREATE INDEX availability_transitions_variant ON availability_transitions (variant_id, id);

CREATE TABLE restock_events (
    id INTEGER PRIMARY KEY,
    store_id INTEGER NOT NULL REFERENCES stores(id),
    variant_id INTEGER NOT NULL REFERENCES variants(id),
    product_id INTEGER NOT NULL REFERENCES products(id),
    transition_id INTEGER NOT NULL REFERENCES availability_transitions(id),
    quantity INTEGER NOT NULL,
    available_until INTEGER,
    planned_count INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL
);
CREATE INDEX restock_events_store ON restock_events (store_id, id);

CREATE TABLE subscribers (
    id INTEGER PRIMARY KEY,
    store_id INTEGER NOT NULL REFERENCES stores(id),
    email TEXT NOT NULL,
    -- Set when a send failed permanently (bounce): nothing more is sent there.
    suppressed_at INTEGER,
    suppressed_reason TEXT,
    created_at INTEGER NOT NULL,
    CONSTRAINT subscribers_store_email UNIQUE (store_id, email)
);

CREATE TABLE subscriptions (
    id INTEGER PRIMARY KEY,
    store_id INTEGER NOT NULL REFERENCES stores(id),
    subscriber_id INTEGER NOT NULL REFERENCES subscribers(id),
    product_id INTEGER NOT NULL REFERENCES products(id),
    -- NULL: any variant of the product.
    variant_id INTEGER REFERENCES variants(id),
    status TEXT NOT NULL CHECK (status IN ('waiting', 'notified', 'unsubscribed')),
    source TEXT NOT NULL DEFAULT 'storefront',
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    notified_at INTEGER,
    unsubscribed_at INTEGER
);
-- One subscription per shopper and target: a repeated sign-up merges.
CREATE UNIQUE INDEX subscriptions_target
    ON subscriptions (subscriber_id, product_id, COALESCE(variant_id, 0));
-- The planner's hot path reads only the waiting list of one variant or product.
CREATE INDEX subscriptions_waiting_variant ON subscriptions (variant_id, id)
    WHERE status = 'waiting' AND variant_id IS NOT NULL;
CREATE INDEX subscriptions_waiting_product ON subscriptions (product_id, id)
    WHERE status = 'waiting' AND variant_id IS NULL;
CREATE INDEX subscriptions_store ON subscriptions (store_id, id);

-- The outbox. A row is written in the same transaction as the restock that planned
-- it and is never deleted: its state records what happened.
CREATE TABLE notifications (
    id INTEGER PRIMARY KEY,
    subscription_id INTEGER NOT NULL REFERENCES subscriptions(id),
    restock_event_id INTEGER NOT NULL REFERENCES restock_events(id),
    -- Copies of the subscription's and event's ids, so the outbox is read without
    -- joins. The planner copies them from the rows referenced above, so they need
    -- no foreign keys of their own (which would triple the cost of planning).
    store_id INTEGER NOT NULL,
    subscriber_id INTEGER NOT NULL,
    variant_id INTEGER NOT NULL,
    channel TEXT NOT NULL DEFAULT 'email',
    recipient TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'running', 'done', 'failed', 'dead', 'skipped')),
    attempts INTEGER NOT NULL DEFAULT 0,
    due_at INTEGER NOT NULL,
    lease_until INTEGER,
    last_error TEXT,
    planned_at INTEGER NOT NULL,
    sent_at INTEGER,
    updated_at INTEGER NOT NULL,
    -- The promise: one plan per subscription per restock event.
    CONSTRAINT notifications_plan_key UNIQUE (subscription_id, restock_event_id)
);
CREATE INDEX notifications_due ON notifications (due_at, id) WHERE state = 'pending';
CREATE INDEX notifications_lease ON notifications (lease_until) WHERE state = 'running';
CREATE INDEX notifications_in_flight ON notifications (subscription_id)
    WHERE state IN ('pending', 'running');
CREATE INDEX notifications_store_state ON notifications (store_id, state, id);

CREATE TABLE tracking_events (
    id INTEGER PRIMARY KEY,
    store_id INTEGER NOT NULL REFERENCES stores(id),
    notification_id INTEGER NOT NULL REFERENCES notifications(id),
    kind TEXT NOT NULL CHECK (kind IN ('click', 'unsubscribe', 'unsubscribe_all')),
    at INTEGER NOT NULL
);
CREATE INDEX tracking_events_notification ON tracking_events (notification_id);

-- Rejected input, kept whole with the reason so an operator can read and replay it.
CREATE TABLE rejections (
    id INTEGER PRIMARY KEY,
    store_id INTEGER REFERENCES stores(id),
    source TEXT NOT NULL,
    reason_code TEXT NOT NULL,
    reason TEXT NOT NULL,
    payload TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    replayed_at INTEGER,
    replay_result TEXT
);
CREATE INDEX rejections_store ON rejections (store_id, id);
