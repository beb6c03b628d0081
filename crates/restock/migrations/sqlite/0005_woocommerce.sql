-- WooCommerce webhooks. Kept identical in both flavours.

-- The store's WooCommerce webhook secret, sealed like shopify_secret (never stored
-- in the clear). NULL: WooCommerce is not connected and its deliveries are refused.
ALTER TABLE stores ADD COLUMN woocommerce_secret TEXT;
