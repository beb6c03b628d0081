-- Shopify product webhooks keep the catalog in step with the shop. Kept identical in
-- both flavours.

-- The store's ISO 4217 currency. Shopify's product payload carries prices as
-- decimal strings without one; NULL until the merchant sets it.
ALTER TABLE stores ADD COLUMN currency TEXT;
-- The shop's domain as signed Shopify deliveries name it (X-Shopify-Shop-Domain),
-- kept so that a replayed product delivery builds the same product links.
ALTER TABLE stores ADD COLUMN shopify_domain TEXT;

-- Whether the product is on sale: 'active', or 'draft', 'archived' or 'deleted' as
-- the shop reports it. Only an active product's variants count as available, so a
-- product that cannot be bought never announces a restock.
ALTER TABLE products ADD COLUMN status TEXT NOT NULL DEFAULT 'active'
    CHECK (status IN ('active', 'draft', 'archived', 'deleted'));

-- When the variant was removed from its product in the shop. The row stays (its
-- sign-ups, levels and history refer to it); a removed variant counts as nothing to
-- sell and takes no new sign-ups.
ALTER TABLE variants ADD COLUMN removed_at BIGINT;
-- Shopify's id of the variant, to tell which variants a product update left out.
ALTER TABLE variants ADD COLUMN shopify_variant_id TEXT;

-- One row per Shopify product the store has sent: the product it became and the
-- newest Shopify updated_at applied, so a late older delivery changes nothing.
-- A deleted product keeps its row (deleted_at set): Shopify never reuses product
-- ids, and an update delivered after the delete must not bring it back.
CREATE TABLE shopify_products (
    store_id BIGINT NOT NULL REFERENCES stores(id),
    shopify_id TEXT NOT NULL,
    product_id BIGINT REFERENCES products(id),
    updated_at BIGINT NOT NULL,
    deleted_at BIGINT,
    CONSTRAINT shopify_products_key PRIMARY KEY (store_id, shopify_id)
);
CREATE UNIQUE INDEX shopify_products_product ON shopify_products (product_id)
    WHERE product_id IS NOT NULL;
