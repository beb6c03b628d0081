-- Operating on the open internet: webhook deliveries already handled, and the
-- indexes that keep retention purges and metric scrapes proportional to the live
-- queue rather than to history. Kept identical in both flavours but for types.

-- Webhook deliveries by the provider's id (Shopify's X-Shopify-Webhook-Id), so a
-- redelivery is answered without being applied again. Purged after 7 days, longer
-- than Shopify's 48-hour retry window.
CREATE TABLE webhook_deliveries (
    store_id INTEGER NOT NULL REFERENCES stores(id),
    source TEXT NOT NULL,
    delivery_id TEXT NOT NULL,
    -- What handling it gave: applied, stale, restocked, or the rejection's code.
    result TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    PRIMARY KEY (store_id, source, delivery_id)
);
CREATE INDEX webhook_deliveries_received ON webhook_deliveries (received_at);

-- Days finished notifications (done, failed, skipped) and their tracking events are
-- kept; dead ones stay until replayed or handled. Merchant setting.
ALTER TABLE stores ADD COLUMN retention_days INTEGER NOT NULL DEFAULT 90;

-- The retention purge finds finished notifications by age without reading the rest.
CREATE INDEX notifications_finished ON notifications (updated_at)
    WHERE state IN ('done', 'failed', 'skipped');
-- /metrics counts dead notifications through this (pending and running have theirs).
CREATE INDEX notifications_dead ON notifications (store_id, id) WHERE state = 'dead';
CREATE INDEX tracking_events_at ON tracking_events (at);
