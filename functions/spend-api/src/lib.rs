//! `/v1/...`: the API external services call to spend a user's tokens.
//!
//! | route | scope | what |
//! |---|---|---|
//! | `GET /v1/users/{id}/balance` | read | available, held, total, subscription |
//! | `GET /v1/users/{id}/transactions?cursor=&limit=` | read | the ledger, newest first |
//! | `POST /v1/spend` | spend | take tokens now |
//! | `POST /v1/holds` | spend | reserve tokens for a while |
//! | `POST /v1/holds/{id}/capture` | spend | take some of a hold, give back the rest |
//! | `POST /v1/holds/{id}/release` | spend | give a hold back |
//! | `POST /v1/refunds` | spend | give back (part of) a spend or capture |
//!
//! Every request carries `Authorization: Bearer <service key>`; every write
//! an `Idempotency-Key`. A write is one DynamoDB transaction: the balance
//! condition, the ledger entry, the idempotency record and both rate
//! windows (the user's, and a shard of the key's) commit or fail together.

mod cache;
pub mod error;
pub mod request;

use std::time::Duration;

use http::{Method, Response, StatusCode};
use serde_json::{Value, json};
use tokenbill::Store;
use tokenbill::domain::ledger::{DebitKind, LedgerEntry};
use tokenbill::domain::notification::{Message, Notification, NotificationId};
use tokenbill::domain::service_key::{RatePerSecond, RateWindow, Scope, SecretKey, ServiceKey};
use tokenbill::domain::{DomainError, Tokens, UserId};
use tokenbill::queue::NotificationQueue;
use tokenbill::store::{Applied, BalanceRequest, RateSlot, StoreError};

use cache::{BalanceCache, KeyCache};
pub use error::ApiError;
use request::Body;

/// Bodies larger than this are refused unread (a spend is ~200 bytes;
/// metadata is capped at 2 KB).
pub const MAX_BODY: usize = 16 * 1024;

#[derive(Debug, Clone)]
pub struct SpendConfig {
    /// Writes one user may make per second, across all keys.
    pub user_rate: RatePerSecond,
    /// How long a warm instance trusts a key lookup: the longest a revoked
    /// key keeps working.
    pub key_cache_ttl: Duration,
    /// A spend or hold that takes the available balance from at least this
    /// to below it tells the user (`None`: never).
    pub low_balance_threshold: Option<Tokens>,
}

impl SpendConfig {
    pub const DEFAULT_USER_RATE: u32 = 20;
    pub const DEFAULT_KEY_CACHE_SECONDS: u64 = 30;
    pub const DEFAULT_LOW_BALANCE_THRESHOLD: u64 = 100;

    /// `SPEND_USER_RATE` (writes per user per second),
    /// `SERVICE_KEY_CACHE_SECONDS` and `LOW_BALANCE_THRESHOLD` (tokens; 0
    /// turns the alert off).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let user_rate = match lookup("SPEND_USER_RATE").filter(|v| !v.trim().is_empty()) {
            Some(text) => text.parse().map_err(|e| format!("SPEND_USER_RATE: {e}"))?,
            None => RatePerSecond::new(Self::DEFAULT_USER_RATE).map_err(|e| e.to_string())?,
        };
        let seconds = match lookup("SERVICE_KEY_CACHE_SECONDS").filter(|v| !v.trim().is_empty()) {
            Some(text) => text
                .trim()
                .parse()
                .map_err(|_| format!("SERVICE_KEY_CACHE_SECONDS: {text:?} is not a number of seconds"))?,
            None => Self::DEFAULT_KEY_CACHE_SECONDS,
        };
        let threshold = match lookup("LOW_BALANCE_THRESHOLD").filter(|v| !v.trim().is_empty()) {
            Some(text) => text
                .trim()
                .parse()
                .map_err(|_| format!("LOW_BALANCE_THRESHOLD: {text:?} is not a number of tokens"))?,
            None => Self::DEFAULT_LOW_BALANCE_THRESHOLD,
        };
        Ok(Self {
            user_rate,
            key_cache_ttl: Duration::from_secs(seconds),
            low_balance_threshold: (threshold > 0)
                .then(|| Tokens::new(threshold))
                .transpose()
                .map_err(|e| format!("LOW_BALANCE_THRESHOLD: {e}"))?,
        })
    }
}

pub struct SpendApi {
    store: Store,
    /// Where low-balance alerts are published at once; without it the
    /// sweep publishes them from the outbox.
    queue: Option<NotificationQueue>,
    config: SpendConfig,
    keys: KeyCache,
    balances: BalanceCache,
}

/// One routed request.
enum Route<'a> {
    Balance(&'a str),
    Transactions(&'a str),
    Spend,
    Hold,
    Capture(&'a str),
    Release(&'a str),
    Refund,
}

impl Route<'_> {
    fn scope(&self) -> Scope {
        match self {
            Route::Balance(_) | Route::Transactions(_) => Scope::Read,
            _ => Scope::Spend,
        }
    }
}

/// What the transaction must also check besides the balance.
struct Guards {
    /// The user must be registered (spends and holds name a user; a hold or
    /// transaction id already implies one).
    user_must_exist: bool,
}

impl SpendApi {
    pub fn new(store: Store, config: SpendConfig) -> Self {
        Self {
            keys: KeyCache::new(config.key_cache_ttl),
            balances: BalanceCache::default(),
            store,
            queue: None,
            config,
        }
    }

    pub fn with_queue(mut self, queue: NotificationQueue) -> Self {
        self.queue = Some(queue);
        self
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Handles one HTTP request from API Gateway (or the local runner).
    pub async fn handle(&self, request: http::Request<impl AsRef<[u8]>>) -> Response<String> {
        match self.answer(request).await {
            Ok(response) => response,
            Err(err) => err.into_response(),
        }
    }

    async fn answer(&self, request: http::Request<impl AsRef<[u8]>>) -> Result<Response<String>, ApiError> {
        let (parts, body) = request.into_parts();
        let body = body.as_ref();
        if body.len() > MAX_BODY {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("bodies are limited to {MAX_BODY} bytes"),
            ));
        }
        let segments: Vec<&str> = parts.uri.path().split('/').filter(|s| !s.is_empty()).collect();
        let route = route(&parts.method, &segments)?;
        let key = self.authenticate(&parts.headers).await?;
        if !key.allows(route.scope()) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("this key lacks the {} scope", route.scope()),
            ));
        }
        if route.scope() == Scope::Read {
            let slot = RateSlot::key(&key.id, RateWindow::for_rate(key.rate, self.store.now()));
            if !self
                .store
                .take_rate_slot(&slot)
                .await
                .map_err(|e| ApiError::from_store(e, "not_found"))?
            {
                return Err(ApiError::rate_limited("key", self.retry_after(key.rate)));
            }
            return match route {
                Route::Balance(user) => self.balance(request::path_user(user)?).await,
                Route::Transactions(user) => {
                    let user = request::path_user(user)?;
                    self.transactions(user, parts.uri.query().unwrap_or("")).await
                }
                _ => unreachable!("read routes are matched above"),
            };
        }
        if let Some(kind) = parts.headers.get(http::header::CONTENT_TYPE)
            && !is_json(kind)
        {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as application/json",
            ));
        }
        let idempotency = request::idempotency_key(parts.headers.get("idempotency-key"), key.id.as_str())?;
        let reference = format!("key:{}", key.id);
        match route {
            Route::Spend => {
                let body = Body::parse(body, request::SPEND_FIELDS)?;
                let request = BalanceRequest::debit(body.user_id()?, DebitKind::Spend, body.tokens()?, idempotency);
                let applied = self
                    .write(
                        &key,
                        body.annotate(request, &reference)?,
                        Guards { user_must_exist: true },
                    )
                    .await?;
                Ok(answer(&applied, |r| {
                    json!({
                        "transaction_id": r.tx_id,
                        "tokens": r.amount,
                        "balance_after": r.balance_after,
                        "created_at": r.created_at,
                    })
                }))
            }
            Route::Hold => {
                let body = Body::parse(body, request::HOLD_FIELDS)?;
                let request = BalanceRequest::hold(body.user_id()?, body.tokens()?, body.ttl_seconds()?, idempotency);
                let applied = self
                    .write(
                        &key,
                        body.annotate(request, &reference)?,
                        Guards { user_must_exist: true },
                    )
                    .await?;
                Ok(answer(&applied, |r| {
                    json!({
                        "hold_id": r.tx_id,
                        "tokens": r.amount,
                        "expires_at": r.expires_at,
                        "balance_after": r.balance_after,
                        "created_at": r.created_at,
                    })
                }))
            }
            Route::Capture(hold) => {
                let hold = request::path_hold(hold)?;
                let body = Body::parse(body, request::CAPTURE_FIELDS)?;
                let request = BalanceRequest::capture(hold, body.tokens()?, idempotency);
                let applied = self.settle(&key, body.annotate(request, &reference)?, hold).await?;
                Ok(answer(&applied, |r| {
                    json!({
                        "transaction_id": r.tx_id,
                        "hold_id": hold,
                        "captured": r.amount,
                        "balance_after": r.balance_after,
                        "created_at": r.created_at,
                    })
                }))
            }
            Route::Release(hold) => {
                let hold = request::path_hold(hold)?;
                let body = Body::parse(body, request::RELEASE_FIELDS)?;
                let request = BalanceRequest::release(hold, idempotency);
                let applied = self.settle(&key, body.annotate(request, &reference)?, hold).await?;
                Ok(answer(&applied, |r| {
                    json!({
                        "transaction_id": r.tx_id,
                        "hold_id": hold,
                        "released": r.amount,
                        "balance_after": r.balance_after,
                        "created_at": r.created_at,
                    })
                }))
            }
            Route::Refund => {
                let body = Body::parse(body, request::REFUND_FIELDS)?;
                let original = body.transaction_id()?;
                self.own(original, &reference, "transaction_not_found").await?;
                let request = BalanceRequest::refund(original, body.tokens()?, idempotency);
                let applied = self
                    .write(
                        &key,
                        body.annotate(request, &reference)?,
                        Guards { user_must_exist: false },
                    )
                    .await
                    .map_err(|e| not_found_as(e, "transaction_not_found"))?;
                Ok(answer(&applied, |r| {
                    json!({
                        "transaction_id": r.tx_id,
                        "refund_of": original,
                        "refunded": r.amount,
                        "balance_after": r.balance_after,
                        "created_at": r.created_at,
                    })
                }))
            }
            Route::Balance(_) | Route::Transactions(_) => unreachable!("read routes answered above"),
        }
    }

    /// The caller's key, from the cache or the table.
    async fn authenticate(&self, headers: &http::HeaderMap) -> Result<ServiceKey, ApiError> {
        let presented = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(bearer)
            .and_then(|v| SecretKey::parse(v.trim()))
            .ok_or_else(ApiError::unauthorized)?;
        let hash = presented.hash();
        let key = match self.keys.get(&hash) {
            Some(key) => key,
            None => {
                let key = self
                    .store
                    .service_key(&hash)
                    .await
                    .map_err(|e| ApiError::from_store(e, "not_found"))?
                    .ok_or_else(ApiError::unauthorized)?;
                self.keys.put(key.clone());
                key
            }
        };
        if !key.is_active() {
            return Err(ApiError::unauthorized());
        }
        Ok(key)
    }

    /// Applies a spend, hold or refund with its guards and rate windows.
    /// A spend that comes up short gives back the user's expired holds
    /// (if any) and tries once more.
    async fn write(&self, key: &ServiceKey, request: BalanceRequest, guards: Guards) -> Result<Applied, ApiError> {
        let user = request.user;
        // Spends and holds pin their write to the balance this instance last
        // saw (a cold instance reads it once), so the answer can say the
        // exact balance after. Captures, releases and refunds read it with
        // their hold or transaction anyway.
        let mut expected = match (guards.user_must_exist, self.balances.get(user)) {
            (false, _) => None,
            (true, Some(available)) => Some(available),
            (true, None) => Some(self.available(user).await?),
        };
        let mut retried = false;
        loop {
            match self
                .apply_guarded(key, request.clone().expecting(expected), &guards)
                .await
            {
                Err(err) if err.code == "insufficient_tokens" && !retried => {
                    retried = true;
                    let released = self
                        .store
                        .release_expired_holds_of(user)
                        .await
                        .map_err(|e| ApiError::from_store(e, "user_not_found"))?;
                    if released == 0 {
                        return Err(err);
                    }
                    expected = Some(self.available(user).await?);
                }
                result => return result,
            }
        }
    }

    async fn available(&self, user: UserId) -> Result<Tokens, ApiError> {
        let (balance, _) = self
            .store
            .balance(user)
            .await
            .map_err(|e| ApiError::from_store(e, "user_not_found"))?;
        Ok(balance.available)
    }

    async fn apply_guarded(
        &self,
        key: &ServiceKey,
        mut request: BalanceRequest,
        guards: &Guards,
    ) -> Result<Applied, ApiError> {
        let now = self.store.now();
        let user = request.user;
        // Indexes of the extra items, in the order they are added.
        let mut refusals: Vec<ApiError> = Vec::new();
        let store_err = |e: StoreError| ApiError::from_store(e, "user_not_found");
        if guards.user_must_exist {
            request = request.with_item(self.store.user_exists_item(user).map_err(store_err)?);
            refusals.push(ApiError::not_found(
                "user_not_found",
                format!("user {user} is not registered"),
            ));
        }
        let user_slot = RateSlot::user(user, self.config.user_rate.get(), now);
        request = request.with_item(self.store.rate_slot_item(&user_slot).map_err(store_err)?);
        refusals.push(ApiError::rate_limited("user", self.retry_after(self.config.user_rate)));
        let key_slot = RateSlot::key(&key.id, RateWindow::for_rate(key.rate, now));
        request = request.with_item(self.store.rate_slot_item(&key_slot).map_err(store_err)?);
        refusals.push(ApiError::rate_limited("key", self.retry_after(key.rate)));

        match self.store.apply(request).await {
            Ok(applied) => {
                match applied.receipt.balance_after {
                    Some(available) => self.balances.put(user, available),
                    None => self.balances.forget(user),
                }
                if guards.user_must_exist && !applied.replayed {
                    self.alert_low_balance(&applied.receipt).await;
                }
                Ok(applied)
            }
            Err(StoreError::ExtraConditionFailed { index, .. }) => Err(refusals
                .get(index)
                .cloned()
                .unwrap_or_else(|| ApiError::unavailable("a condition failed; retry"))),
            Err(StoreError::Domain(DomainError::InsufficientTokens { available, requested })) => {
                self.balances.put(user, available);
                Err(DomainError::InsufficientTokens { available, requested }.into())
            }
            Err(err) => Err(ApiError::from_store(err, "user_not_found")),
        }
    }

    /// Tells the user when this spend or hold took their balance below the
    /// threshold. Advisory, so it costs nothing on the common path: only
    /// the crossing write adds the outbox item (one `PutItem`, id from the
    /// entry, so never twice) and its publish. A crash in between loses the
    /// alert, never tokens; a write whose balance after is unknown (see
    /// `BalanceCache`) sends none.
    async fn alert_low_balance(&self, receipt: &tokenbill::store::Receipt) {
        let (Some(threshold), Some(after)) = (self.config.low_balance_threshold, receipt.balance_after) else {
            return;
        };
        let before = after.checked_add(receipt.amount).unwrap_or(after);
        if !(after < threshold && before >= threshold) {
            return;
        }
        let id = NotificationId::low_balance(receipt.tx_id);
        let notification = Notification::new(
            id.clone(),
            receipt.tx_id.user,
            Message::LowBalance { threshold },
            self.store.now(),
        );
        match self.store.add_notification(&notification).await {
            Ok(_) => {
                if let Some(queue) = &self.queue {
                    queue.publish_or_log(&[id]).await;
                }
            }
            Err(err) => tracing::warn!(error = %err, user = %receipt.tx_id.user, "low-balance alert not recorded"),
        }
    }

    /// A service settles and refunds only what its own key made (a hold is
    /// its creating entry): anything else does not exist for it. One read,
    /// on these rarer calls only.
    async fn own(&self, tx: tokenbill::domain::TxId, reference: &str, not_found: &'static str) -> Result<(), ApiError> {
        let entry = self
            .store
            .ledger_entry(tx)
            .await
            .map_err(|e| ApiError::from_store(e, not_found))?;
        if entry.is_none_or(|entry| entry.reference.as_deref() != Some(reference)) {
            return Err(ApiError::not_found(not_found, format!("{tx} not found")));
        }
        Ok(())
    }

    /// Captures or releases a hold. One that expired is given back first,
    /// and the capture is refused (its tokens are no longer reserved).
    async fn settle(
        &self,
        key: &ServiceKey,
        request: BalanceRequest,
        hold: tokenbill::domain::TxId,
    ) -> Result<Applied, ApiError> {
        self.own(hold, &format!("key:{}", key.id), "hold_not_found").await?;
        let result = self
            .write(key, request, Guards { user_must_exist: false })
            .await
            .map_err(|e| not_found_as(e, "hold_not_found"));
        if let Err(ApiError {
            code: "hold_expired", ..
        }) = &result
        {
            self.store
                .release_expired_hold(hold)
                .await
                .map_err(|e| ApiError::from_store(e, "hold_not_found"))?;
            self.balances.forget(hold.user);
        }
        result
    }

    async fn balance(&self, user: UserId) -> Result<Response<String>, ApiError> {
        let store_err = |e| ApiError::from_store(e, "user_not_found");
        let mut view = self.store.user_view(user, Vec::new()).await.map_err(store_err)?;
        if view.user.is_none() {
            return Err(ApiError::not_found(
                "user_not_found",
                format!("user {user} is not registered"),
            ));
        }
        if view.balance.held.get() > 0 && self.store.release_expired_holds_of(user).await.map_err(store_err)? > 0 {
            view = self.store.user_view(user, Vec::new()).await.map_err(store_err)?;
        }
        // Buckets are each within bounds; a sum past them is a broken store.
        let total = view.balance.total().map_err(|e| {
            ApiError::from_store(StoreError::corrupt(format!("balance of {user}"), e), "user_not_found")
        })?;
        let subscription = view.subscription.map(|s| {
            json!({
                "status": s.status,
                "tariff_id": s.tariff_id,
                "period_end": s.period_end,
                "auto_renew": s.auto_renew,
                "tokens_per_period": s.tokens_per_period,
            })
        });
        Ok(json_response(
            StatusCode::OK,
            &json!({
                "user_id": user,
                "available": view.balance.available,
                "held": view.balance.held,
                "total": total,
                "subscription": subscription,
            }),
        ))
    }

    async fn transactions(&self, user: UserId, query: &str) -> Result<Response<String>, ApiError> {
        let (cursor, limit) = request::page_query(query, user)?;
        let store_err = |e| ApiError::from_store(e, "user_not_found");
        if self.store.user(user).await.map_err(store_err)?.is_none() {
            return Err(ApiError::not_found(
                "user_not_found",
                format!("user {user} is not registered"),
            ));
        }
        let page = self.store.ledger_page(user, cursor, limit).await.map_err(store_err)?;
        let entries: Vec<Value> = page.entries.iter().map(entry_json).collect();
        Ok(json_response(
            StatusCode::OK,
            &json!({ "transactions": entries, "next_cursor": page.next }),
        ))
    }

    fn retry_after(&self, rate: RatePerSecond) -> u64 {
        RateWindow::for_rate(rate, self.store.now()).retry_after(self.store.now())
    }
}

/// The token of `Authorization: Bearer <token>` (the scheme is
/// case-insensitive, RFC 9110).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(token)
}

/// `application/json`, with or without parameters, in any case.
fn is_json(content_type: &http::HeaderValue) -> bool {
    let text = content_type.to_str().unwrap_or_default();
    let media = text.split(';').next().unwrap_or_default().trim();
    media.eq_ignore_ascii_case("application/json")
}

fn route<'a>(method: &Method, segments: &[&'a str]) -> Result<Route<'a>, ApiError> {
    let (route, allowed) = match segments {
        ["v1", "users", user, "balance"] => (Route::Balance(user), Method::GET),
        ["v1", "users", user, "transactions"] => (Route::Transactions(user), Method::GET),
        ["v1", "spend"] => (Route::Spend, Method::POST),
        ["v1", "holds"] => (Route::Hold, Method::POST),
        ["v1", "holds", hold, "capture"] => (Route::Capture(hold), Method::POST),
        ["v1", "holds", hold, "release"] => (Route::Release(hold), Method::POST),
        ["v1", "refunds"] => (Route::Refund, Method::POST),
        _ => return Err(ApiError::not_found("no_route", "no such route")),
    };
    if method != allowed {
        return Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("use {allowed}"),
        ));
    }
    Ok(route)
}

/// A store's "not found" names the hold or transaction the path or body
/// pointed at.
fn not_found_as(err: ApiError, code: &'static str) -> ApiError {
    if err.status == StatusCode::NOT_FOUND && err.code == "user_not_found" {
        ApiError { code, ..err }
    } else {
        err
    }
}

/// 200 with the receipt's JSON; a replay carries the same body and says so
/// in a header.
fn answer(applied: &Applied, body: impl Fn(&tokenbill::store::Receipt) -> Value) -> Response<String> {
    let mut response = json_response(StatusCode::OK, &body(&applied.receipt));
    if applied.replayed {
        response
            .headers_mut()
            .insert("idempotent-replayed", http::HeaderValue::from_static("true"));
    }
    response
}

fn entry_json(entry: &LedgerEntry) -> Value {
    let metadata = entry
        .metadata
        .as_deref()
        .and_then(|text| serde_json::from_str::<Value>(text).ok());
    json!({
        "transaction_id": entry.tx_id,
        "kind": entry.kind,
        "tokens": entry.amount,
        "delta_available": entry.delta_available,
        "delta_held": entry.delta_held,
        "created_at": entry.created_at,
        "description": entry.description,
        "metadata": metadata,
        "hold_id": entry.hold_id,
        "refund_of": entry.refund_of,
        "refundable": entry.refundable,
    })
}

pub(crate) fn json_response(status: StatusCode, body: &Value) -> Response<String> {
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::CACHE_CONTROL, "no-store")
        .body(body.to_string())
        .expect("a status, headers and a body always make a response")
}
