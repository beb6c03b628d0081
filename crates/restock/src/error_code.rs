//! The one list of error codes: every code an HTTP answer or a kept rejection can
//! carry, each with its HTTP status and its documentation. The OpenAPI document and
//! the README list them from here (a test keeps the README in step).

use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;

macro_rules! error_codes {
    ($( $(#[doc = $doc:literal])+ $variant:ident = ($code:literal, $status:ident), )*) => {
        /// Every error code the server answers or records, with its HTTP status.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, ToSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum ErrorCode {
            $( $(#[doc = $doc])+ $variant, )*
        }

        impl ErrorCode {
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant),*];

            pub fn as_str(self) -> &'static str {
                match self { $(ErrorCode::$variant => $code,)* }
            }

            pub fn status(self) -> StatusCode {
                match self { $(ErrorCode::$variant => StatusCode::$status,)* }
            }

            /// What the code means, for the documentation.
            pub fn description(self) -> &'static str {
                match self { $(ErrorCode::$variant => concat!($($doc),+).trim(),)* }
            }
        }
    };
}

error_codes! {
    /// The body is not valid JSON or does not have the documented shape.
    InvalidJson = ("invalid_json", BAD_REQUEST),
    /// The request is well-formed but contradicts itself (e.g. both `sku` and `product`).
    InvalidRequest = ("invalid_request", BAD_REQUEST),
    /// A query-string parameter has the wrong type or an out-of-range value.
    InvalidQuery = ("invalid_query", BAD_REQUEST),
    /// A path segment has the wrong type or contains a control character.
    InvalidPath = ("invalid_path", BAD_REQUEST),
    /// Missing, unknown or revoked API key (or wrong admin token).
    Unauthorized = ("unauthorized", UNAUTHORIZED),
    /// A webhook's signature does not match its body (or no secret is configured).
    InvalidSignature = ("invalid_signature", UNAUTHORIZED),
    /// The browser origin may not call this store's storefront API.
    OriginNotAllowed = ("origin_not_allowed", FORBIDDEN),
    /// The admin API is off because no `admin_token` is configured.
    AdminDisabled = ("admin_disabled", FORBIDDEN),
    /// No such resource in this store, or no such route.
    NotFound = ("not_found", NOT_FOUND),
    /// Unknown store slug or publishable key.
    UnknownStore = ("unknown_store", NOT_FOUND),
    /// A tracking or unsubscribe link whose signature is not valid.
    InvalidToken = ("invalid_token", NOT_FOUND),
    /// The route exists but not for this HTTP method.
    MethodNotAllowed = ("method_not_allowed", METHOD_NOT_ALLOWED),
    /// The request (including its body) took longer than `http.request_timeout_secs`.
    RequestTimeout = ("request_timeout", REQUEST_TIMEOUT),
    /// The variant (or a variant of the product) is in stock: it can be bought now.
    InStock = ("in_stock", CONFLICT),
    /// The product was deleted from the shop or the variant removed from its product:
    /// it is no longer sold, so new sign-ups for it are refused.
    Discontinued = ("discontinued", CONFLICT),
    /// The change conflicts with existing data (e.g. a taken slug or inventory item).
    Conflict = ("conflict", CONFLICT),
    /// The SKU belongs to another product of this store.
    SkuTaken = ("sku_taken", CONFLICT),
    /// The address opted out of all the store's alerts: an anonymous sign-up cannot
    /// undo that; the shopper's confirmation is needed.
    ConfirmationRequired = ("confirmation_required", CONFLICT),
    /// Only dead or failed notifications (or rejections of a replayable source) can be replayed.
    NotReplayable = ("not_replayable", CONFLICT),
    /// The body is larger than this route accepts.
    PayloadTooLarge = ("payload_too_large", PAYLOAD_TOO_LARGE),
    /// A stock batch has more items than allowed; split it.
    BatchTooLarge = ("batch_too_large", PAYLOAD_TOO_LARGE),
    /// The URL (path and query) is longer than the server accepts.
    UriTooLong = ("uri_too_long", URI_TOO_LONG),
    /// The body is not `application/json` (or the form type a route documents).
    UnsupportedMediaType = ("unsupported_media_type", UNSUPPORTED_MEDIA_TYPE),
    /// The address is not one a message can be sent to.
    InvalidEmail = ("invalid_email", UNPROCESSABLE_ENTITY),
    /// The SKU is empty, too long or contains control characters.
    InvalidSku = ("invalid_sku", UNPROCESSABLE_ENTITY),
    /// No variant with this SKU in this store.
    UnknownSku = ("unknown_sku", UNPROCESSABLE_ENTITY),
    /// No product with this id in this store.
    UnknownProduct = ("unknown_product", UNPROCESSABLE_ENTITY),
    /// A field's value is out of its documented range or format.
    InvalidValue = ("invalid_value", UNPROCESSABLE_ENTITY),
    /// Mail to this address bounced before; the store must re-enable it.
    AddressSuppressed = ("address_suppressed", UNPROCESSABLE_ENTITY),
    /// No variant is mapped to the webhook's inventory item.
    UnknownInventoryItem = ("unknown_inventory_item", UNPROCESSABLE_ENTITY),
    /// A signed webhook body that is not the documented payload.
    InvalidPayload = ("invalid_payload", UNPROCESSABLE_ENTITY),
    /// The store lacks a setting this input needs (e.g. its `currency` for Shopify
    /// products); set it with `PATCH /v1/store` and replay the rejection.
    StoreSettingMissing = ("store_setting_missing", UNPROCESSABLE_ENTITY),
    /// A signed webhook for a topic Restock does not handle; kept, never applied.
    UnsupportedTopic = ("unsupported_topic", UNPROCESSABLE_ENTITY),
    /// Shopify does not track this item's quantity (`available` is null).
    UntrackedItem = ("untracked_item", UNPROCESSABLE_ENTITY),
    /// A stock item that is not an object of the documented shape (kept as a rejection).
    InvalidItem = ("invalid_item", UNPROCESSABLE_ENTITY),
    /// A stock location that is empty, too long or contains control characters.
    InvalidLocation = ("invalid_location", UNPROCESSABLE_ENTITY),
    /// A quantity outside ±1,000,000,000 (or a negative incoming quantity).
    InvalidQuantity = ("invalid_quantity", UNPROCESSABLE_ENTITY),
    /// A time that is not RFC 3339.
    InvalidTime = ("invalid_time", UNPROCESSABLE_ENTITY),
    /// A CSV import whose header row is missing, names an unknown or repeated
    /// column or lacks a required one, or that holds a record too long to be a line.
    InvalidCsv = ("invalid_csv", UNPROCESSABLE_ENTITY),
    /// A CSV line that cannot be read: a field count other than the header's, a NUL
    /// byte, or text that is not UTF-8 (kept as a rejection).
    InvalidLine = ("invalid_line", UNPROCESSABLE_ENTITY),
    /// A market name that is not 1 to 32 of a-z, 0-9, '-' and '_'.
    InvalidMarket = ("invalid_market", UNPROCESSABLE_ENTITY),
    /// The store has defined no such market (`PUT /v1/markets/{market}`).
    UnknownMarket = ("unknown_market", UNPROCESSABLE_ENTITY),
    /// Not an IANA time zone such as `Europe/Berlin`.
    InvalidTimeZone = ("invalid_time_zone", UNPROCESSABLE_ENTITY),
    /// A store policy or release policy setting out of range; the message names it.
    InvalidPolicy = ("invalid_policy", UNPROCESSABLE_ENTITY),
    /// Too many failed authentication attempts from this client; see `Retry-After`.
    TooManyAttempts = ("too_many_attempts", TOO_MANY_REQUESTS),
    /// An unexpected error; the details are logged, never returned.
    Internal = ("internal", INTERNAL_SERVER_ERROR),
    /// The database cannot be reached right now; retry after `Retry-After` seconds.
    DatabaseUnavailable = ("database_unavailable", SERVICE_UNAVAILABLE),
    /// Readiness probe: the database does not answer.
    NotReady = ("not_ready", SERVICE_UNAVAILABLE),
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
