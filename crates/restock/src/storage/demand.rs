//! Demand: shoppers (one person per store), their contact points, consents and
//! preferences, and their sign-ups.

use restock_core::ids::{ProductId, ShopperId, StoreId, SubscriptionId, VariantId};
use restock_core::planner::OptOuts;
use restock_core::values::{Channel, Email, Market, TimeZone};

use super::{Db, Dialect, Result, with_pool};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Variant {
        product: ProductId,
        variant: VariantId,
    },
    Product(ProductId),
}

impl Target {
    /// The product, and the variant id as stored (`None`: any variant of it).
    fn columns(self) -> (ProductId, Option<i64>) {
        match self {
            Target::Variant { product, variant } => (product, Some(variant.0)),
            Target::Product(product) => (product, None),
        }
    }
}

/// What the rule for a sign-up by SKU reads of the variant the SKU names
/// ([`Db::sku_facts`](super::Db::sku_facts)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::FromRow)]
pub struct SkuFacts {
    pub id: i64,
    pub product_id: i64,
    /// The shop removed the variant from its product: it is no longer sold.
    pub removed: bool,
    /// In stock as the variant's own state (a market's is kept apart).
    pub in_stock: bool,
    /// Its product only holds stock that came before the catalog named the SKU.
    pub placeholder: bool,
}

/// Why a sign-up for a SKU is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkuRefusal {
    /// No variant of the catalog has the SKU.
    Unknown,
    /// The variant was removed from its product.
    Discontinued,
    /// It can be bought now.
    InStock,
}

impl SkuFacts {
    /// The variant a shopper may sign up for: the catalog names it and it is still
    /// sold. Whether it is in stock is [`SkuFacts::unless_in_stock`]'s to say.
    pub fn sold(found: Option<SkuFacts>) -> std::result::Result<SkuFacts, SkuRefusal> {
        match found {
            Some(f) if !f.placeholder && !f.removed => Ok(f),
            Some(f) if !f.placeholder => Err(SkuRefusal::Discontinued),
            _ => Err(SkuRefusal::Unknown),
        }
    }

    /// The sign-up's target, unless the variant is `in_stock` (in the sign-up's
    /// market, or its own state without one).
    pub fn unless_in_stock(self, in_stock: bool) -> std::result::Result<Target, SkuRefusal> {
        if in_stock {
            return Err(SkuRefusal::InStock);
        }
        Ok(Target::Variant {
            product: ProductId(self.product_id),
            variant: VariantId(self.id),
        })
    }

    /// The target of a sign-up by SKU without a market: the variant is sold and not
    /// in stock.
    pub fn target(found: Option<SkuFacts>) -> std::result::Result<Target, SkuRefusal> {
        let f = Self::sold(found)?;
        f.unless_in_stock(f.in_stock)
    }
}

/// Where a consent was given, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConsentInput {
    /// The words the shopper saw.
    pub text: String,
    /// 'widget', 'api', 'chat_agent', 'import', 'link'.
    pub source: String,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

/// A sign-up, as the storefront or the merchant's API gives it.
#[derive(Debug, Clone)]
pub struct SignUp {
    pub email: Email,
    pub target: Target,
    pub market: Option<Market>,
    /// Where it came from: 'storefront', 'api', 'chat_agent', 'import'.
    pub source: String,
    pub consent: ConsentInput,
    pub time_zone: Option<TimeZone>,
    /// Anonymous sign-ups (the storefront) may not put back a shopper who opted out
    /// of everything; an authenticated one with a fresh consent may.
    pub anonymous: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubscribeOutcome {
    Created(SubscriptionId, ShopperId),
    /// The shopper was already waiting for it; the sign-up is renewed.
    Merged(SubscriptionId, ShopperId),
    /// The address bounced before; nothing is sent there.
    Suppressed,
    /// The shopper opted out of everything: an anonymous sign-up cannot undo that.
    ConfirmationRequired,
}

#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize, utoipa::ToSchema)]
pub struct SubscriptionRow {
    pub id: i64,
    pub shopper_id: i64,
    pub email: Option<String>,
    pub product_external_id: String,
    pub sku: Option<String>,
    pub market: Option<String>,
    pub status: String,
    pub source: String,
    pub created_at: i64,
    pub last_signup_at: i64,
    pub notified_at: Option<i64>,
    pub ended_at: Option<i64>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ShopperRow {
    pub id: i64,
    pub customer_id: Option<String>,
    pub tier: Option<String>,
    pub time_zone: Option<String>,
    pub preferred_channel: Option<String>,
    pub opted_out_at: Option<i64>,
    pub opt_outs: Option<String>,
    pub last_order_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl ShopperRow {
    /// Their opt-outs as the planner reads them.
    pub fn opt_outs(&self) -> OptOuts {
        parse_opt_outs(self.opted_out_at, self.opt_outs.as_deref())
    }
}

pub(crate) fn parse_opt_outs(opted_out_at: Option<i64>, json: Option<&str>) -> OptOuts {
    let mut o: OptOuts = json
        .and_then(|j| serde_json::from_str(j).ok())
        .unwrap_or_default();
    o.all = opted_out_at.is_some();
    o
}

#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize, utoipa::ToSchema)]
pub struct ContactRow {
    pub id: i64,
    pub channel: String,
    pub address: String,
    pub consent_at: Option<i64>,
    pub consent_withdrawn_at: Option<i64>,
    pub suppressed_at: Option<i64>,
    pub suppressed_reason: Option<String>,
}

#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize, utoipa::ToSchema)]
pub struct ConsentRow {
    pub id: i64,
    pub channel: String,
    pub granted: bool,
    pub text: String,
    pub source: String,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub at: i64,
}

/// A shopper's message about a restock, as decided: planned, deferred, held back,
/// sent or skipped.
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize, utoipa::ToSchema)]
pub struct ShopperMessageRow {
    pub id: i64,
    pub restock_event_id: i64,
    pub sku: String,
    pub purpose: String,
    pub channel: String,
    pub recipient: String,
    pub wave: i64,
    pub state: String,
    pub reason: Option<String>,
    pub due_at: i64,
    pub planned_at: i64,
    pub sent_at: Option<i64>,
}

/// Changes to a shopper; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct ShopperUpdate {
    /// `Some(None)` clears it.
    pub tier: Option<Option<String>>,
    pub time_zone: Option<Option<String>>,
    pub customer_id: Option<Option<String>>,
    pub preferred_channel: Option<Option<Channel>>,
}

/// A preference change: `Some(true)` opts in, `Some(false)` opts out.
#[derive(Debug, Clone, Default)]
pub struct PreferenceChange {
    pub all: Option<bool>,
    pub categories: Vec<(String, bool)>,
    pub channels: Vec<(Channel, bool)>,
}

pub(crate) const SUBSCRIPTION_COLUMNS: &str = "s.id, s.shopper_id, \
    (SELECT cp.address FROM contact_points cp WHERE cp.shopper_id = s.shopper_id AND cp.channel = 'email' ORDER BY cp.id LIMIT 1) AS email, \
    p.external_id AS product_external_id, v.sku, s.market, s.status, s.source, s.created_at, s.last_signup_at, \
    s.notified_at, s.ended_at";

macro_rules! shopper_columns {
    () => {
        "id, customer_id, tier, time_zone, preferred_channel, opted_out_at, opt_outs, last_order_at, created_at, updated_at"
    };
}

/// Finds the shopper an email address belongs to at a store, creating the shopper
/// and the contact point if none does. Returns (shopper, contact point, suppressed,
/// opted out of everything, narrower opt-outs, created now). A new contact point is
/// created consented to at `$now`: the caller records the consent it was given.
macro_rules! shopper_for_email {
    ($tx:expr, $store:expr, $email:expr, $now:expr) => {{
        let key = $email.identity_key();
        let found: Option<(i64, i64, Option<i64>, Option<i64>, Option<String>)> = sqlx::query_as(
            "SELECT cp.shopper_id, cp.id, cp.suppressed_at, sh.opted_out_at, sh.opt_outs FROM contact_points cp \
             JOIN shoppers sh ON sh.id = cp.shopper_id \
             WHERE cp.store_id = $1 AND cp.channel = 'email' AND cp.address_key = $2",
        )
        .bind($store.0)
        .bind(&key)
        .fetch_optional(&mut *$tx)
        .await?;
        match found {
            Some((shopper, contact, suppressed, opted_out, opt_outs)) => {
                (shopper, contact, suppressed, opted_out, opt_outs, false)
            }
            None => {
                let shopper: i64 = sqlx::query_scalar(
                    "INSERT INTO shoppers (store_id, created_at, updated_at) VALUES ($1, $2, $2) RETURNING id",
                )
                .bind($store.0)
                .bind($now)
                .fetch_one(&mut *$tx)
                .await?;
                let contact: i64 = sqlx::query_scalar(
                    "INSERT INTO contact_points (store_id, shopper_id, channel, address, address_key, consent_at, created_at, updated_at) \
                     VALUES ($1, $2, 'email', $3, $4, $5, $5, $5) RETURNING id",
                )
                .bind($store.0)
                .bind(shopper)
                .bind($email.as_str())
                .bind(&key)
                .bind($now)
                .fetch_one(&mut *$tx)
                .await?;
                (shopper, contact, None, None, None, true)
            }
        }
    }};
}

/// Records a consent (given or withdrawn) and makes it the contact point's state.
macro_rules! record_consent {
    ($tx:expr, $store:expr, $shopper:expr, $contact:expr, $channel:expr, $granted:expr, $c:expr, $now:expr) => {{
        record_consent!($tx, $store, $shopper, $contact, $channel, $granted, $c, $now, true)
    }};
    // `$update`: false when the contact point already carries this consent's state.
    ($tx:expr, $store:expr, $shopper:expr, $contact:expr, $channel:expr, $granted:expr, $c:expr, $now:expr, $update:expr) => {{
        sqlx::query(
            "INSERT INTO consents (store_id, shopper_id, contact_point_id, channel, granted, text, source, ip, user_agent, at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind($store.0)
        .bind($shopper)
        .bind($contact)
        .bind($channel)
        .bind($granted)
        .bind(&$c.text)
        .bind(&$c.source)
        .bind($c.ip.as_deref())
        .bind($c.user_agent.as_deref())
        .bind($now)
        .execute(&mut *$tx)
        .await?;
        if $update {
            sqlx::query(
                "UPDATE contact_points SET consent_at = CASE WHEN $2 THEN $3 ELSE consent_at END, \
                   consent_withdrawn_at = CASE WHEN $2 THEN NULL ELSE $3 END, updated_at = $3 \
                 WHERE id = $1",
            )
            .bind($contact)
            .bind($granted)
            .bind($now)
            .execute(&mut *$tx)
            .await?;
        }
    }};
}

/// The condition a shopper's sign-up (`subscriptions`, unaliased) meets when it is
/// waiting for the product, variant and market given as the placeholders named:
/// a sign-up for the same target renews it instead of adding another.
macro_rules! waiting_for_target {
    ($product:literal, $variant:literal, $market:literal) => {
        concat!(
            "product_id = ",
            $product,
            " AND COALESCE(variant_id, 0) = COALESCE(",
            $variant,
            ", 0) AND COALESCE(market, '') = COALESCE(",
            $market,
            ", '') AND status = 'waiting'"
        )
    };
}

/// The update a [`Renewal`] makes to a known shopper, with the placeholders named:
/// the shopper, whether they opt in again, their time zone (`NULL` keeps it),
/// whether their opt-outs change and to what, and the time. It changes nothing
/// when the renewal changes nothing. Both databases' sign-up paths write it.
macro_rules! renewal_update {
    ($shopper:literal, $opt_in:literal, $tz:literal, $set_opt_outs:literal, $opt_outs:literal, $now:literal) => {
        concat!(
            "UPDATE shoppers SET opted_out_at = CASE WHEN ",
            $opt_in,
            " THEN NULL ELSE opted_out_at END, ",
            "time_zone = COALESCE(",
            $tz,
            ", time_zone), ",
            "opt_outs = CASE WHEN ",
            $set_opt_outs,
            " THEN ",
            $opt_outs,
            " ELSE opt_outs END, ",
            "updated_at = ",
            $now,
            " WHERE id = ",
            $shopper,
            " AND (",
            $opt_in,
            " OR ",
            $tz,
            " IS NOT NULL OR ",
            $set_opt_outs,
            ")"
        )
    };
}

/// One sign-up inside the caller's transaction (`$tx`), as an async block: finds
/// (or creates) the shopper by their address, records their consent to email, and
/// adds the sign-up or renews the one waiting. Shared by the one-at-a-time and the
/// grouped paths so both decide alike.
macro_rules! subscribe_in {
    ($tx:ident, $store:expr, $s:expr, $now:expr) => {{
        let (store, s, now): (StoreId, &SignUp, i64) = ($store, $s, $now);
        async {
            let (product, variant) = s.target.columns();
            let market = s.market.as_ref().map(|m| m.as_str().to_string());
            let (shopper, contact, suppressed, opted_out, opt_outs, created) =
                shopper_for_email!($tx, store, s.email, now);
            let known = Known {
                shopper,
                contact,
                suppressed: suppressed.is_some(),
                opted_out: opted_out.is_some(),
                opt_outs,
            };
            let renewal = match known.renewal(s) {
                Ok(renewal) => renewal,
                Err(outcome) => return Ok::<_, super::StorageError>(outcome),
            };
            if renewal.changes_shopper() {
                sqlx::query(renewal_update!("$1", "$2", "$3", "$4", "$5", "$6"))
                    .bind(shopper)
                    .bind(renewal.opt_in_again)
                    .bind(renewal.time_zone)
                    .bind(renewal.opt_outs.is_some())
                    .bind(renewal.opt_outs.as_ref().and_then(|o| o.as_deref()))
                    .bind(now)
                    .execute(&mut *$tx)
                    .await?;
            }
            // A contact point created just now already carries the consent's time.
            record_consent!($tx, store, shopper, contact, "email", true, s.consent, now, !created);
            // A shopper created just now has no sign-ups to renew.
            let existing: Option<i64> = if created { None } else { sqlx::query_scalar(concat!(
                "SELECT id FROM subscriptions WHERE shopper_id = $1 AND ", waiting_for_target!("$2", "$3", "$4"),
            ))
            .bind(shopper)
            .bind(product.0)
            .bind(variant)
            .bind(market.as_deref())
            .fetch_optional(&mut *$tx)
            .await? };
            let outcome = match existing {
                Some(id) => {
                    sqlx::query("UPDATE subscriptions SET last_signup_at = $2, updated_at = $2 WHERE id = $1")
                        .bind(id)
                        .bind(now)
                        .execute(&mut *$tx)
                        .await?;
                    SubscribeOutcome::Merged(SubscriptionId(id), ShopperId(shopper))
                }
                None => {
                    let id: i64 = sqlx::query_scalar(
                        "INSERT INTO subscriptions (store_id, shopper_id, product_id, variant_id, market, status, source, \
                                                    created_at, last_signup_at, updated_at) \
                         VALUES ($1, $2, $3, $4, $5, 'waiting', $6, $7, $7, $7) RETURNING id",
                    )
                    .bind(store.0)
                    .bind(shopper)
                    .bind(product.0)
                    .bind(variant)
                    .bind(market.as_deref())
                    .bind(&s.source)
                    .bind(now)
                    .fetch_one(&mut *$tx)
                    .await?;
                    SubscribeOutcome::Created(SubscriptionId(id), ShopperId(shopper))
                }
            };
            Ok::<_, super::StorageError>(outcome)
        }
        .await
    }};
}

/// What a sign-up finds of an address the store already knows.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Known {
    shopper: i64,
    contact: i64,
    /// The address bounced.
    suppressed: bool,
    /// The shopper opted out of everything.
    opted_out: bool,
    /// The shopper's narrower opt-outs, as stored.
    opt_outs: Option<String>,
}

/// The changes to a known shopper a sign-up makes besides its consent and the
/// sign-up itself.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Renewal {
    /// They had opted out of everything and are opted in again.
    opt_in_again: bool,
    /// Their time zone, as the sign-up gives it.
    time_zone: Option<&'static str>,
    /// Their narrower opt-outs rewritten, where they change (`Some(None)`: none left).
    opt_outs: Option<Option<String>>,
}

impl Renewal {
    /// Whether the shopper's row changes ([`renewal_update!`]).
    fn changes_shopper(&self) -> bool {
        self.opt_in_again || self.time_zone.is_some() || self.opt_outs.is_some()
    }
}

impl Known {
    /// The rule for a sign-up of an address the store knows: nothing is written
    /// for an address that bounced, nor for a shopper who opted out of everything
    /// when the sign-up is anonymous (an authenticated one vouches for a fresh
    /// consent and opts them in again); signing up by email lifts an opt-out of
    /// email. Both databases' sign-up paths decide by it.
    fn renewal(&self, s: &SignUp) -> std::result::Result<Renewal, SubscribeOutcome> {
        if self.suppressed {
            return Err(SubscribeOutcome::Suppressed);
        }
        if self.opted_out && s.anonymous {
            return Err(SubscribeOutcome::ConfirmationRequired);
        }
        let opt_outs = self.opt_outs.as_deref().and_then(|json| {
            let mut o = parse_opt_outs(None, Some(json));
            o.channels.contains(&Channel::Email).then(|| {
                o.channels.retain(|c| *c != Channel::Email);
                (!o.is_empty()).then(|| serde_json::to_string(&o).unwrap_or_default())
            })
        });
        Ok(Renewal {
            opt_in_again: self.opted_out,
            time_zone: s.time_zone.map(|tz| tz.name()),
            opt_outs,
        })
    }
}

/// A sign-up on PostgreSQL on one connection, in two statements at most instead of
/// up to nine: [`first_or_known_pg`] writes a first sign-up whole, or reads what
/// the store knows of the address; the rule ([`Known::renewal`]) decides; and
/// [`renew_known_pg`] writes the rest. Each statement is atomic on its own. One that
/// meets a concurrent sign-up of the same address (its first sign-up, or one for
/// the same target) breaks a uniqueness and writes nothing; the sign-up is then
/// taken again from the start, and finds what the other wrote.
pub(crate) async fn subscribe_pg(
    conn: &mut sqlx::PgConnection,
    store: StoreId,
    s: &SignUp,
    now: i64,
) -> Result<SubscribeOutcome> {
    let mut attempt = 1;
    loop {
        let outcome = match first_or_known_pg(conn, store, s, now).await {
            Ok(FirstOrKnown::Created(outcome)) => Ok(outcome),
            Ok(FirstOrKnown::Known(known, waiting)) => match known.renewal(s) {
                Ok(renewal) => renew_known_pg(conn, store, s, now, &known, &renewal, waiting).await,
                Err(outcome) => Ok(outcome),
            },
            Err(e) => Err(e),
        };
        match outcome {
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() && attempt < 3 => attempt += 1,
            outcome => return Ok(outcome?),
        }
    }
}

/// A sign-up's first statement on PostgreSQL: a first sign-up written, or what
/// the store knows of the address with the sign-up waiting for the same target.
enum FirstOrKnown {
    Created(SubscribeOutcome),
    Known(Known, Option<i64>),
}

/// One statement that, unless the address is known, writes the shopper, their
/// contact point, the consent and the sign-up together (a statement is atomic on its
/// own): the rows [`subscribe_in!`] writes for an address it does not know (a new
/// shopper has no opt-out, no suppression and no sign-up to renew). For a known
/// address it writes nothing and returns what [`Known::renewal`] reads, and the
/// shopper's sign-up waiting for the same target. A unique violation, with nothing
/// written, when the address became known meanwhile.
async fn first_or_known_pg(
    conn: &mut sqlx::PgConnection,
    store: StoreId,
    s: &SignUp,
    now: i64,
) -> std::result::Result<FirstOrKnown, sqlx::Error> {
    #[derive(sqlx::FromRow)]
    struct Row {
        subscription: Option<i64>,
        shopper: i64,
        contact: Option<i64>,
        suppressed: bool,
        opted_out: bool,
        opt_outs: Option<String>,
        waiting: Option<i64>,
    }
    let key = s.email.identity_key();
    let (product, variant) = s.target.columns();
    let row: Row = sqlx::query_as(concat!(
        "WITH known AS ( \
             SELECT cp.shopper_id, cp.id AS contact, cp.suppressed_at IS NOT NULL AS suppressed, \
                    sh.opted_out_at IS NOT NULL AS opted_out, sh.opt_outs, \
                    (SELECT id FROM subscriptions WHERE shopper_id = cp.shopper_id AND ",
        waiting_for_target!("$10", "$11", "$12"),
        ") AS waiting \
             FROM contact_points cp JOIN shoppers sh ON sh.id = cp.shopper_id \
             WHERE cp.store_id = $1 AND cp.channel = 'email' AND cp.address_key = $5), \
         sh AS ( \
             INSERT INTO shoppers (store_id, time_zone, created_at, updated_at) \
             SELECT $1, $2, $3, $3 WHERE NOT EXISTS (SELECT 1 FROM known) \
             RETURNING id), \
         cp AS ( \
             INSERT INTO contact_points (store_id, shopper_id, channel, address, address_key, consent_at, created_at, updated_at) \
             SELECT $1, sh.id, 'email', $4, $5, $3, $3, $3 FROM sh RETURNING id, shopper_id), \
         co AS ( \
             INSERT INTO consents (store_id, shopper_id, contact_point_id, channel, granted, text, source, ip, user_agent, at) \
             SELECT $1, cp.shopper_id, cp.id, 'email', TRUE, $6, $7, $8, $9, $3 FROM cp), \
         su AS ( \
             INSERT INTO subscriptions (store_id, shopper_id, product_id, variant_id, market, status, source, \
                                        created_at, last_signup_at, updated_at) \
             SELECT $1, cp.shopper_id, $10, $11, $12, 'waiting', $13, $3, $3, $3 FROM cp RETURNING id, shopper_id) \
         SELECT id AS subscription, shopper_id AS shopper, NULL::bigint AS contact, FALSE AS suppressed, \
                FALSE AS opted_out, NULL::text AS opt_outs, NULL::bigint AS waiting FROM su \
         UNION ALL \
         SELECT NULL, shopper_id, contact, suppressed, opted_out, opt_outs, waiting FROM known",
    ))
    .bind(store.0)
    .bind(s.time_zone.map(|tz| tz.name()))
    .bind(now)
    .bind(s.email.as_str())
    .bind(&key)
    .bind(&s.consent.text)
    .bind(&s.consent.source)
    .bind(s.consent.ip.as_deref())
    .bind(s.consent.user_agent.as_deref())
    .bind(product.0)
    .bind(variant)
    .bind(s.market.as_ref().map(|m| m.as_str()))
    .bind(&s.source)
    .fetch_one(&mut *conn)
    .await?;
    Ok(match (row.subscription, row.contact) {
        (Some(id), _) => FirstOrKnown::Created(SubscribeOutcome::Created(
            SubscriptionId(id),
            ShopperId(row.shopper),
        )),
        (None, Some(contact)) => FirstOrKnown::Known(
            Known {
                shopper: row.shopper,
                contact,
                suppressed: row.suppressed,
                opted_out: row.opted_out,
                opt_outs: row.opt_outs,
            },
            row.waiting,
        ),
        // Each of the statement's two halves returns its ids.
        (None, None) => return Err(sqlx::Error::RowNotFound),
    })
}

/// The writes [`subscribe_in!`] makes for a known address, as [`Known::renewal`]
/// decided them, in one statement: the sign-up `waiting` renewed — or a new one
/// when there is none, or it ended meanwhile — the shopper's changes, the consent,
/// and the contact point's consent. Concurrent ones lock the rows they share in
/// the same order: the sign-up, the shopper, the contact point.
async fn renew_known_pg(
    conn: &mut sqlx::PgConnection,
    store: StoreId,
    s: &SignUp,
    now: i64,
    known: &Known,
    renewal: &Renewal,
    waiting: Option<i64>,
) -> std::result::Result<SubscribeOutcome, sqlx::Error> {
    let (product, variant) = s.target.columns();
    let (id, created): (i64, bool) = sqlx::query_as(concat!(
        "WITH re AS ( \
             UPDATE subscriptions SET last_signup_at = $3, updated_at = $3 \
             WHERE id = $4 AND status = 'waiting' RETURNING id), \
         su AS ( \
             INSERT INTO subscriptions (store_id, shopper_id, product_id, variant_id, market, status, source, \
                                        created_at, last_signup_at, updated_at) \
             SELECT $1, $2, $5, $6, $7, 'waiting', $8, $3, $3, $3 WHERE NOT EXISTS (SELECT 1 FROM re) RETURNING id), \
         sh AS (",
        renewal_update!("$2", "$9", "$10", "$11", "$12", "$3"),
        "), \
         co AS ( \
             INSERT INTO consents (store_id, shopper_id, contact_point_id, channel, granted, text, source, ip, user_agent, at) \
             VALUES ($1, $2, $13, 'email', TRUE, $14, $15, $16, $17, $3)), \
         cp AS ( \
             UPDATE contact_points SET consent_at = $3, consent_withdrawn_at = NULL, updated_at = $3 WHERE id = $13) \
         SELECT id, FALSE FROM re UNION ALL SELECT id, TRUE FROM su",
    ))
    .bind(store.0)
    .bind(known.shopper)
    .bind(now)
    .bind(waiting)
    .bind(product.0)
    .bind(variant)
    .bind(s.market.as_ref().map(|m| m.as_str()))
    .bind(&s.source)
    .bind(renewal.opt_in_again)
    .bind(renewal.time_zone)
    .bind(renewal.opt_outs.is_some())
    .bind(renewal.opt_outs.as_ref().and_then(|o| o.as_deref()))
    .bind(known.contact)
    .bind(&s.consent.text)
    .bind(&s.consent.source)
    .bind(s.consent.ip.as_deref())
    .bind(s.consent.user_agent.as_deref())
    .fetch_one(&mut *conn)
    .await?;
    let (id, shopper) = (SubscriptionId(id), ShopperId(known.shopper));
    Ok(match created {
        true => SubscribeOutcome::Created(id, shopper),
        false => SubscribeOutcome::Merged(id, shopper),
    })
}

/// Writes a group's first sign-ups of unknown addresses at once, where the database
/// gains by it; returns their positions in the group and outcomes.
trait FirstSignUps {
    async fn first_signups(
        &mut self,
        signups: &[(StoreId, &SignUp, i64)],
    ) -> std::result::Result<Vec<(usize, SubscribeOutcome)>, sqlx::Error>;
}

impl FirstSignUps for sqlx::Transaction<'_, sqlx::Sqlite> {
    async fn first_signups(
        &mut self,
        signups: &[(StoreId, &SignUp, i64)],
    ) -> std::result::Result<Vec<(usize, SubscribeOutcome)>, sqlx::Error> {
        subscribe_new_sqlite(self, signups).await
    }
}

impl FirstSignUps for sqlx::Transaction<'static, sqlx::Postgres> {
    /// PostgreSQL signs up one at a time (a first sign-up is one statement there,
    /// [`subscribe_new_pg`]), so a group leaves them all to [`subscribe_in!`].
    async fn first_signups(
        &mut self,
        _signups: &[(StoreId, &SignUp, i64)],
    ) -> std::result::Result<Vec<(usize, SubscribeOutcome)>, sqlx::Error> {
        Ok(Vec::new())
    }
}

/// The first sign-ups of a SQLite group whose addresses the store does not know
/// (each address's first occurrence in the group; a repeat is left to
/// [`subscribe_in!`], which then finds the shopper written here): the rows
/// [`subscribe_in!`] writes for an unknown address — shopper, contact point,
/// consent, sign-up — written four statements for the whole group, with the ids
/// SQLite would give them (the next after the largest, the write lock held).
/// Returns each written sign-up's position in the group and outcome.
async fn subscribe_new_sqlite(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    signups: &[(StoreId, &SignUp, i64)],
) -> std::result::Result<Vec<(usize, SubscribeOutcome)>, sqlx::Error> {
    use std::collections::HashSet;
    let keys: Vec<(i64, String)> = signups
        .iter()
        .map(|(store, s, _)| (store.0, s.email.identity_key()))
        .collect();
    let known: Vec<(i64, String)> = sqlx::query_as(
        "SELECT cp.store_id, cp.address_key FROM json_each($1) j \
         JOIN contact_points cp ON cp.store_id = json_extract(j.value, '$[0]') \
          AND cp.channel = 'email' AND cp.address_key = json_extract(j.value, '$[1]')",
    )
    .bind(serde_json::to_string(&keys).unwrap_or_default())
    .fetch_all(&mut **tx)
    .await?;
    let mut taken: HashSet<(i64, String)> = known.into_iter().collect();
    let fresh: Vec<usize> = (0..signups.len())
        .filter(|&i| taken.insert(keys[i].clone()))
        .collect();
    if fresh.is_empty() {
        return Ok(Vec::new());
    }
    let (shopper0, contact0, consent0, subscription0): (i64, i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT COALESCE(MAX(id), 0) FROM shoppers), (SELECT COALESCE(MAX(id), 0) FROM contact_points), \
                (SELECT COALESCE(MAX(id), 0) FROM consents), (SELECT COALESCE(MAX(id), 0) FROM subscriptions)",
    )
    .fetch_one(&mut **tx)
    .await?;
    let mut rows = Vec::with_capacity(fresh.len());
    let mut out = Vec::with_capacity(fresh.len());
    for (n, &i) in fresh.iter().enumerate() {
        let (store, s, now) = signups[i];
        let n = n as i64 + 1;
        let (product, variant) = s.target.columns();
        rows.push(serde_json::json!({
            "shopper": shopper0 + n, "contact": contact0 + n, "consent": consent0 + n,
            "subscription": subscription0 + n, "store": store.0, "now": now,
            "time_zone": s.time_zone.map(|tz| tz.name()), "email": s.email.as_str(),
            "key": &keys[i].1, "text": &s.consent.text, "consent_source": &s.consent.source,
            "ip": s.consent.ip.as_deref(), "user_agent": s.consent.user_agent.as_deref(),
            "product": product.0, "variant": variant,
            "market": s.market.as_ref().map(|m| m.as_str()), "source": &s.source,
        }));
        out.push((
            i,
            SubscribeOutcome::Created(SubscriptionId(subscription0 + n), ShopperId(shopper0 + n)),
        ));
    }
    let rows = serde_json::Value::Array(rows).to_string();
    // One statement list, run in one call: one hand-off to the connection's worker
    // thread instead of one per table. The rows are read as JSONB, so each field
    // is looked up in the parsed element instead of parsing its text again.
    sqlx::query(concat!(
        "INSERT INTO shoppers (id, store_id, time_zone, created_at, updated_at) \
         SELECT r.value ->> 'shopper', r.value ->> 'store', r.value ->> 'time_zone', r.value ->> 'now', r.value ->> 'now' \
         FROM jsonb_each(jsonb($1)) r; ",
        "INSERT INTO contact_points (id, store_id, shopper_id, channel, address, address_key, consent_at, created_at, updated_at) \
         SELECT r.value ->> 'contact', r.value ->> 'store', r.value ->> 'shopper', 'email', r.value ->> 'email', \
                r.value ->> 'key', r.value ->> 'now', r.value ->> 'now', r.value ->> 'now' \
         FROM jsonb_each(jsonb($1)) r; ",
        "INSERT INTO consents (id, store_id, shopper_id, contact_point_id, channel, granted, text, source, ip, user_agent, at) \
         SELECT r.value ->> 'consent', r.value ->> 'store', r.value ->> 'shopper', r.value ->> 'contact', 'email', TRUE, \
                r.value ->> 'text', r.value ->> 'consent_source', r.value ->> 'ip', r.value ->> 'user_agent', r.value ->> 'now' \
         FROM jsonb_each(jsonb($1)) r; ",
        "INSERT INTO subscriptions (id, store_id, shopper_id, product_id, variant_id, market, status, source, \
                                    created_at, last_signup_at, updated_at) \
         SELECT r.value ->> 'subscription', r.value ->> 'store', r.value ->> 'shopper', r.value ->> 'product', \
                r.value ->> 'variant', r.value ->> 'market', 'waiting', r.value ->> 'source', \
                r.value ->> 'now', r.value ->> 'now', r.value ->> 'now' \
         FROM jsonb_each(jsonb($1)) r",
    ))
    .bind(&rows)
    .execute(&mut **tx)
    .await?;
    Ok(out)
}

/// The writes of [`Db::subscribe_group`] in the write transaction `$tx`: the
/// outcomes, or `None` if one of them failed (the caller then rolls back).
macro_rules! group_in {
    ($tx:ident, $signups:expr) => {{
        let signups: &[(StoreId, &SignUp, i64)] = $signups;
        async {
            let mut out: Vec<Option<SubscribeOutcome>> = vec![None; signups.len()];
            // First sign-ups of addresses the store does not know, written set-wise
            // on SQLite. A failure rolls the group back like any other.
            match $tx.first_signups(signups).await {
                Ok(fresh) => {
                    for (i, outcome) in fresh {
                        out[i] = Some(outcome);
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "the group's first sign-ups failed; the group is rolled back");
                    return None;
                }
            }
            for (i, &(store, s, now)) in signups.iter().enumerate() {
                if out[i].is_some() {
                    continue;
                }
                match subscribe_in!($tx, store, s, now) {
                    Ok(outcome) => out[i] = Some(outcome),
                    Err(e) => {
                        tracing::debug!(error = %e, "a sign-up of a group failed; the group is rolled back");
                        return None;
                    }
                }
            }
            Some(out.into_iter().flatten().collect::<Vec<_>>())
        }
        .await
    }};
}

/// [`Db::subscribe_group`]'s writes in a SQLite write transaction its caller began
/// and ends (the sign-up writer, which reads the group's variants in it too):
/// the outcomes, or `None` if one of them failed and the caller is to roll back.
pub(crate) async fn subscribe_group_in<'c>(
    mut tx: sqlx::Transaction<'c, sqlx::Sqlite>,
    signups: &[(StoreId, &SignUp, i64)],
) -> (
    sqlx::Transaction<'c, sqlx::Sqlite>,
    Option<Vec<SubscribeOutcome>>,
) {
    let out = group_in!(tx, signups);
    (tx, out)
}

impl Db {
    /// Signs a shopper up: finds (or creates) the shopper by their address, records
    /// their consent to email, and adds the sign-up — or renews the one waiting.
    pub async fn subscribe(
        &self,
        store: StoreId,
        s: &SignUp,
        now: i64,
    ) -> Result<SubscribeOutcome> {
        let pool = match self {
            Db::Postgres(pool) => {
                return subscribe_pg(&mut *pool.acquire().await?, store, s, now).await;
            }
            Db::Sqlite(pool) => pool,
        };
        let once = async || {
            let mut tx = pool.begin_write().await?;
            let outcome = subscribe_in!(tx, store, s, now)?;
            tx.commit().await?;
            Ok(outcome)
        };
        match once().await {
            // A concurrent first sign-up of the same address created its shopper
            // between this one's look-up and its insert: this one joins that shopper.
            Err(e) if super::StorageError::unique_violation(&e) => once().await,
            result => result,
        }
    }

    /// Signs up several shoppers in one write transaction (SQLite's group commit:
    /// one commit for the sign-ups waiting instead of one each), each answered with
    /// its own outcome. `None` if one of them failed: then nothing was written, and
    /// the caller signs each up on its own so that each gets its own answer (a
    /// savepoint per sign-up would cost two statements each for a rare case).
    pub async fn subscribe_group(
        &self,
        signups: &[(StoreId, &SignUp, i64)],
    ) -> Result<Option<Vec<SubscribeOutcome>>> {
        with_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            match group_in!(tx, signups) {
                Some(out) => {
                    tx.commit().await?;
                    Ok(Some(out))
                }
                None => {
                    tx.rollback().await?;
                    Ok(None)
                }
            }
        })
    }

    /// Cancels a waiting sign-up before a restock (the merchant, or the shopper's
    /// signed link); its alerts not yet sent are skipped. `None` if the store has no
    /// such sign-up; otherwise its status after the call.
    pub async fn cancel_subscription(
        &self,
        store: StoreId,
        id: SubscriptionId,
        now: i64,
    ) -> Result<Option<String>> {
        with_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let status: Option<String> = sqlx::query_scalar(
                "SELECT status FROM subscriptions WHERE id = $1 AND store_id = $2",
            )
            .bind(id.0)
            .bind(store.0)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(status) = status else { return Ok(None) };
            if status != "waiting" {
                return Ok(Some(status));
            }
            sqlx::query("UPDATE subscriptions SET status = 'cancelled', ended_at = $2, updated_at = $2 WHERE id = $1")
                .bind(id.0)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "UPDATE notifications SET state = 'skipped', reason = 'ended', last_error = 'sign-up cancelled', updated_at = $2 \
                 WHERE state = 'pending' AND (subscription_id = $1 OR extra_subscription_id = $1) \
                   AND shopper_id = (SELECT shopper_id FROM subscriptions WHERE id = $1)",
            )
            .bind(id.0)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(Some("cancelled".into()))
        })
    }

    /// Ends one sign-up from a message's unsubscribe link, or (`all`) opts the
    /// shopper out of everything at the store: every sign-up ends and nothing
    /// pending goes. Returns how many sign-ups ended.
    pub async fn unsubscribe(
        &self,
        subscription: SubscriptionId,
        all: bool,
        now: i64,
    ) -> Result<u64> {
        with_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let shopper: Option<i64> = sqlx::query_scalar("SELECT shopper_id FROM subscriptions WHERE id = $1")
                .bind(subscription.0)
                .fetch_optional(&mut *tx)
                .await?;
            let Some(shopper) = shopper else { return Ok(0) };
            let (end_sql, skip_sql) = if all {
                sqlx::query("UPDATE shoppers SET opted_out_at = COALESCE(opted_out_at, $2), updated_at = $2 WHERE id = $1")
                    .bind(shopper)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                (
                    "UPDATE subscriptions SET status = 'unsubscribed', ended_at = $3, updated_at = $3 \
                     WHERE shopper_id = $1 AND status IN ('waiting', 'notified') AND $2 = $2",
                    "UPDATE notifications SET state = 'skipped', reason = 'opted_out', last_error = 'unsubscribed', updated_at = $3 \
                     WHERE state = 'pending' AND shopper_id = $1 AND $2 = $2",
                )
            } else {
                (
                    "UPDATE subscriptions SET status = 'unsubscribed', ended_at = $3, updated_at = $3 \
                     WHERE id = $2 AND shopper_id = $1 AND status IN ('waiting', 'notified')",
                    "UPDATE notifications SET state = 'skipped', reason = 'ended', last_error = 'unsubscribed', updated_at = $3 \
                     WHERE state = 'pending' AND shopper_id = $1 AND (subscription_id = $2 OR extra_subscription_id = $2)",
                )
            };
            let n = sqlx::query(end_sql)
                .bind(shopper)
                .bind(subscription.0)
                .bind(now)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            sqlx::query(skip_sql)
                .bind(shopper)
                .bind(subscription.0)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(n)
        })
    }

    pub async fn subscription_status(
        &self,
        subscription: SubscriptionId,
    ) -> Result<Option<String>> {
        with_pool!(self, pool => {
            Ok(sqlx::query_scalar("SELECT status FROM subscriptions WHERE id = $1")
                .bind(subscription.0)
                .fetch_optional(pool)
                .await?)
        })
    }

    /// A store's sign-ups a page at a time, optionally one shopper's or one status.
    pub async fn subscriptions(
        &self,
        store: StoreId,
        shopper: Option<ShopperId>,
        status: Option<&str>,
        after: i64,
        limit: i64,
    ) -> Result<Vec<SubscriptionRow>> {
        let sql = format!(
            "SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions s \
             JOIN products p ON p.id = s.product_id LEFT JOIN variants v ON v.id = s.variant_id \
             WHERE s.store_id = $1 AND ($2 IS NULL OR s.shopper_id = $2) AND ($3 IS NULL OR s.status = $3) \
               AND s.id > $4 ORDER BY s.id LIMIT $5"
        );
        with_pool!(self, pool => {
            Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(store.0)
                .bind(shopper.map(|s| s.0))
                .bind(status)
                .bind(after)
                .bind(limit)
                .fetch_all(pool)
                .await?)
        })
    }

    pub async fn subscription(
        &self,
        store: StoreId,
        id: SubscriptionId,
    ) -> Result<Option<SubscriptionRow>> {
        let sql = format!(
            "SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions s \
             JOIN products p ON p.id = s.product_id LEFT JOIN variants v ON v.id = s.variant_id \
             WHERE s.store_id = $1 AND s.id = $2"
        );
        with_pool!(self, pool => {
            Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(store.0)
                .bind(id.0)
                .fetch_optional(pool)
                .await?)
        })
    }

    pub async fn shopper(&self, store: StoreId, id: ShopperId) -> Result<Option<ShopperRow>> {
        with_pool!(self, pool => {
            Ok(sqlx::query_as(concat!("SELECT ", shopper_columns!(), " FROM shoppers WHERE store_id = $1 AND id = $2"))
                .bind(store.0)
                .bind(id.0)
                .fetch_optional(pool)
                .await?)
        })
    }

    /// The shopper an address belongs to (case-insensitively), if any.
    pub async fn shopper_by_email(
        &self,
        store: StoreId,
        email: &Email,
    ) -> Result<Option<ShopperRow>> {
        with_pool!(self, pool => {
            Ok(sqlx::query_as(concat!("SELECT ", shopper_columns!(), " FROM shoppers WHERE id = \
                (SELECT shopper_id FROM contact_points WHERE store_id = $1 AND channel = 'email' AND address_key = $2)"))
                .bind(store.0)
                .bind(email.identity_key())
                .fetch_optional(pool)
                .await?)
        })
    }

    pub async fn shopper_contacts(&self, shopper: ShopperId) -> Result<Vec<ContactRow>> {
        with_pool!(self, pool => {
            Ok(sqlx::query_as(
                "SELECT id, channel, address, consent_at, consent_withdrawn_at, suppressed_at, suppressed_reason \
                 FROM contact_points WHERE shopper_id = $1 ORDER BY id",
            )
            .bind(shopper.0)
            .fetch_all(pool)
            .await?)
        })
    }

    pub async fn shopper_consents(
        &self,
        shopper: ShopperId,
        limit: i64,
    ) -> Result<Vec<ConsentRow>> {
        with_pool!(self, pool => {
            Ok(sqlx::query_as(
                "SELECT id, channel, granted, text, source, ip, user_agent, at FROM consents \
                 WHERE shopper_id = $1 ORDER BY id DESC LIMIT $2",
            )
            .bind(shopper.0)
            .bind(limit)
            .fetch_all(pool)
            .await?)
        })
    }

    /// A shopper's messages, newest first: planned, deferred (due later), held back
    /// (with the reason), sent, skipped.
    pub async fn shopper_messages(
        &self,
        store: StoreId,
        shopper: ShopperId,
        before: i64,
        limit: i64,
    ) -> Result<Vec<ShopperMessageRow>> {
        with_pool!(self, pool => {
            Ok(sqlx::query_as(
                "SELECT n.id, n.restock_event_id, v.sku, n.purpose, n.channel, n.recipient, n.wave, n.state, n.reason, \
                        n.due_at, n.planned_at, n.sent_at \
                 FROM notifications n JOIN variants v ON v.id = n.variant_id \
                 WHERE n.shopper_id = $1 AND n.store_id = $2 AND n.id < $3 ORDER BY n.id DESC LIMIT $4",
            )
            .bind(shopper.0)
            .bind(store.0)
            .bind(before)
            .bind(limit)
            .fetch_all(pool)
            .await?)
        })
    }

    pub async fn update_shopper(
        &self,
        store: StoreId,
        id: ShopperId,
        u: &ShopperUpdate,
        now: i64,
    ) -> Result<Option<ShopperRow>> {
        with_pool!(self, pool => {
            Ok(sqlx::query_as(concat!("UPDATE shoppers SET \
                   tier = CASE WHEN $3 THEN $4 ELSE tier END, \
                   time_zone = CASE WHEN $5 THEN $6 ELSE time_zone END, \
                   customer_id = CASE WHEN $7 THEN $8 ELSE customer_id END, \
                   preferred_channel = CASE WHEN $9 THEN $10 ELSE preferred_channel END, \
                   updated_at = $11 \
                 WHERE store_id = $1 AND id = $2 RETURNING ", shopper_columns!()))
                .bind(store.0)
                .bind(id.0)
                .bind(u.tier.is_some())
                .bind(u.tier.clone().flatten())
                .bind(u.time_zone.is_some())
                .bind(u.time_zone.clone().flatten())
                .bind(u.customer_id.is_some())
                .bind(u.customer_id.clone().flatten())
                .bind(u.preferred_channel.is_some())
                .bind(u.preferred_channel.flatten().map(|c| c.as_str()))
                .bind(now)
                .fetch_optional(pool)
                .await?)
        })
    }

    /// Applies a preference change. Opting out of a channel withdraws consent to it
    /// at every address (recorded); opting in to everything clears the global
    /// opt-out. Returns the shopper's opt-outs after the change.
    pub async fn change_preferences(
        &self,
        store: StoreId,
        id: ShopperId,
        change: &PreferenceChange,
        consent: &ConsentInput,
        now: i64,
    ) -> Result<Option<OptOuts>> {
        with_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let row: Option<(Option<i64>, Option<String>)> = sqlx::query_as(
                "SELECT opted_out_at, opt_outs FROM shoppers WHERE store_id = $1 AND id = $2",
            )
            .bind(store.0)
            .bind(id.0)
            .fetch_optional(&mut *tx)
            .await?;
            let Some((opted_out_at, json)) = row else { return Ok(None) };
            let mut o = parse_opt_outs(opted_out_at, json.as_deref());
            if let Some(in_all) = change.all {
                o.all = !in_all;
            }
            for (cat, opted_in) in &change.categories {
                o.categories.retain(|c| c != cat);
                if !opted_in {
                    o.categories.push(cat.clone());
                }
            }
            for (ch, opted_in) in &change.channels {
                o.channels.retain(|c| c != ch);
                if !opted_in {
                    o.channels.push(*ch);
                }
                let contacts: Vec<i64> = sqlx::query_scalar(
                    "SELECT id FROM contact_points WHERE shopper_id = $1 AND channel = $2",
                )
                .bind(id.0)
                .bind(ch.as_str())
                .fetch_all(&mut *tx)
                .await?;
                for contact in contacts {
                    record_consent!(tx, store, id.0, contact, ch.as_str(), *opted_in, consent, now);
                }
            }
            o.categories.sort();
            o.categories.dedup();
            o.channels.sort();
            o.channels.dedup();
            let narrow = OptOuts { all: false, ..o.clone() };
            let json = (!narrow.is_empty()).then(|| serde_json::to_string(&narrow).unwrap_or_default());
            sqlx::query(
                "UPDATE shoppers SET opted_out_at = CASE WHEN $3 THEN COALESCE(opted_out_at, $5) END, \
                   opt_outs = $4, updated_at = $5 WHERE store_id = $1 AND id = $2",
            )
            .bind(store.0)
            .bind(id.0)
            .bind(o.all)
            .bind(json)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(Some(o))
        })
    }

    /// Records a consent given or withdrawn for a channel at every address the
    /// shopper has on it. Returns false if the store has no such shopper.
    pub async fn record_consent(
        &self,
        store: StoreId,
        id: ShopperId,
        channel: Channel,
        granted: bool,
        consent: &ConsentInput,
        now: i64,
    ) -> Result<bool> {
        with_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let exists: Option<i64> = sqlx::query_scalar("SELECT id FROM shoppers WHERE store_id = $1 AND id = $2")
                .bind(store.0)
                .bind(id.0)
                .fetch_optional(&mut *tx)
                .await?;
            if exists.is_none() {
                return Ok(false);
            }
            let contacts: Vec<i64> = sqlx::query_scalar(
                "SELECT id FROM contact_points WHERE shopper_id = $1 AND channel = $2",
            )
            .bind(id.0)
            .bind(channel.as_str())
            .fetch_all(&mut *tx)
            .await?;
            if contacts.is_empty() {
                sqlx::query(
                    "INSERT INTO consents (store_id, shopper_id, channel, granted, text, source, ip, user_agent, at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                )
                .bind(store.0)
                .bind(id.0)
                .bind(channel.as_str())
                .bind(granted)
                .bind(&consent.text)
                .bind(&consent.source)
                .bind(consent.ip.as_deref())
                .bind(consent.user_agent.as_deref())
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            for contact in contacts {
                record_consent!(tx, store, id.0, contact, channel.as_str(), granted, consent, now);
            }
            tx.commit().await?;
            Ok(true)
        })
    }

    /// Ends waiting sign-ups whose interest window has passed, store by store (the
    /// window is each store's setting). Returns how many ended.
    pub async fn expire_subscriptions(&self, now: i64, limit: i64) -> Result<u64> {
        let stores = self.list_stores().await?;
        let mut ended = 0;
        for store in stores {
            let policy = super::stock::parse_store_policy(&store.policy);
            let Some(window) = policy.interest_window_secs else {
                continue;
            };
            let cutoff = now.saturating_sub(window.saturating_mul(1000));
            ended += with_pool!(self, pool => {
                sqlx::query(
                    "UPDATE subscriptions SET status = 'expired', ended_at = $3, updated_at = $3 \
                     WHERE id IN (SELECT id FROM subscriptions WHERE store_id = $1 AND status = 'waiting' \
                                  AND last_signup_at <= $2 ORDER BY last_signup_at LIMIT $4)",
                )
                .bind(store.id)
                .bind(cutoff)
                .bind(now)
                .bind(limit)
                .execute(pool)
                .await?
                .rows_affected()
            });
        }
        Ok(ended)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signup(anonymous: bool, time_zone: Option<&str>) -> SignUp {
        SignUp {
            email: Email::parse("ann@example.com").expect("email"),
            target: Target::Product(ProductId(1)),
            market: None,
            source: "test".into(),
            consent: ConsentInput::default(),
            time_zone: time_zone.map(|tz| TimeZone::parse(tz).expect("tz")),
            anonymous,
        }
    }

    fn known(suppressed: bool, opted_out: bool, opt_outs: Option<&str>) -> Known {
        Known {
            shopper: 1,
            contact: 2,
            suppressed,
            opted_out,
            opt_outs: opt_outs.map(str::to_string),
        }
    }

    #[test]
    fn a_bounced_address_is_suppressed_whoever_signs_it_up() {
        for anonymous in [true, false] {
            for opted_out in [true, false] {
                assert_eq!(
                    known(true, opted_out, None).renewal(&signup(anonymous, None)),
                    Err(SubscribeOutcome::Suppressed)
                );
            }
        }
    }

    #[test]
    fn only_an_authenticated_signup_opts_a_shopper_back_in() {
        assert_eq!(
            known(false, true, None).renewal(&signup(true, None)),
            Err(SubscribeOutcome::ConfirmationRequired)
        );
        let back = known(false, true, None)
            .renewal(&signup(false, Some("Europe/Paris")))
            .expect("renewal");
        assert_eq!(
            back,
            Renewal {
                opt_in_again: true,
                time_zone: Some("Europe/Paris"),
                opt_outs: None,
            }
        );
        let plain = known(false, false, None)
            .renewal(&signup(true, None))
            .expect("renewal");
        assert_eq!(
            plain,
            Renewal {
                opt_in_again: false,
                time_zone: None,
                opt_outs: None,
            }
        );
    }

    #[test]
    fn signing_up_by_email_lifts_an_opt_out_of_email_and_keeps_the_rest() {
        let renew = |json: &str| {
            known(false, false, Some(json))
                .renewal(&signup(true, None))
                .expect("renewal")
                .opt_outs
        };
        let rest = renew(r#"{"categories":["boots"],"channels":["email","sms"]}"#)
            .expect("rewritten")
            .expect("some left");
        assert_eq!(
            parse_opt_outs(None, Some(&rest)),
            OptOuts {
                all: false,
                categories: vec!["boots".into()],
                channels: vec![Channel::Sms],
            }
        );
        // Nothing left: the opt-outs are cleared.
        assert_eq!(renew(r#"{"channels":["email"]}"#), Some(None));
        // No opt-out of email: nothing to rewrite.
        assert_eq!(
            renew(r#"{"categories":["boots"],"channels":["sms"]}"#),
            None
        );
    }
}
