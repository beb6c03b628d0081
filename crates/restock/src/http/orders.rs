//! Orders from the merchant: `POST /v1/orders`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;

use super::auth::Merchant;
use super::error::{ApiError, ApiResult, ErrorBody};
use crate::app::App;
use crate::error_code::ErrorCode;
use crate::intake::orders::{self, OrderBody};
use crate::storage::orders::OrderOutcome;
use crate::storage::rejections::NewRejection;

#[derive(Debug, Serialize, ToSchema)]
pub struct OrderResult {
    /// "recorded", or "duplicate" when this order id was recorded before (nothing changed).
    pub status: String,
    pub order_id: String,
    /// The shopper who bought, when the customer is one.
    pub shopper_id: Option<i64>,
    /// Alerts the purchase fulfilled (ended).
    pub ended_alerts: u64,
    /// SKUs not in the catalog (the lines are kept all the same).
    pub unknown_skus: Vec<String>,
}

pub fn answer(order_id: String, out: OrderOutcome) -> (StatusCode, OrderResult) {
    match out {
        OrderOutcome::Recorded {
            shopper,
            ended_alerts,
            unknown_skus,
            ..
        } => (
            StatusCode::CREATED,
            OrderResult {
                status: "recorded".into(),
                order_id,
                shopper_id: shopper.map(|s| s.0),
                ended_alerts,
                unknown_skus,
            },
        ),
        OrderOutcome::Duplicate { .. } => (
            StatusCode::OK,
            OrderResult {
                status: "duplicate".into(),
                order_id,
                shopper_id: None,
                ended_alerts: 0,
                unknown_skus: Vec::new(),
            },
        ),
    }
}

/// Record an order. A shopper who bought a variant has their alert for it ended;
/// recent purchasers are not told of restocks (the store's window); the units count
/// against stock until a stock source reports a level newer than the order. Sending
/// an order again changes nothing. An invalid order is refused with the reason and
/// kept for replay.
#[utoipa::path(post, path = "/v1/orders", tag = "orders", security(("api_key" = [])),
    request_body = OrderBody,
    responses((status = 201, body = OrderResult), (status = 200, body = OrderResult, description = "duplicate"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn post_order(
    State(app): State<App>,
    Merchant(store): Merchant,
    body: axum::body::Bytes,
) -> ApiResult<(StatusCode, Json<OrderResult>)> {
    let reject = |code: ErrorCode, reason: String| {
        let app = app.clone();
        let payload = String::from_utf8_lossy(&body).into_owned();
        async move {
            let id = app
                .db
                .insert_rejection(
                    &NewRejection {
                        store: Some(store),
                        source: "orders".into(),
                        reason_code: code.as_str().into(),
                        reason: reason.clone(),
                        payload,
                    },
                    app.now(),
                )
                .await?;
            app.metrics
                .intake_rejects
                .with_label_values(&["orders", code.as_str()])
                .inc();
            Ok::<_, ApiError>(ApiError::new(
                code,
                format!("{reason} (kept as rejection {})", id.0),
            ))
        }
    };
    let parsed: OrderBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return Err(reject(ErrorCode::InvalidPayload, format!("not an order: {e}")).await?);
        }
    };
    let order = match parsed.parse(app.now()) {
        Ok(o) => o,
        Err((code, reason)) => return Err(reject(code, reason).await?),
    };
    let out = orders::record(&app, store, &order).await?;
    let (status, body) = answer(order.order_ref.clone(), out);
    Ok((status, Json(body)))
}
