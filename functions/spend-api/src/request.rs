//! Strict parsing of request bodies, paths and queries. Anything off gets
//! a 400 with a code saying what: the callers are programs, and a quiet
//! guess at what they meant would spend someone's tokens.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use tokenbill::domain::{IdempotencyKey, Tokens, TxId, UserId};
use tokenbill::store::BalanceRequest;

use crate::error::ApiError;

/// Most tokens one request may move: far above any real call, far below
/// where arithmetic could get near its limits.
pub const MAX_REQUEST_TOKENS: u64 = 1_000_000_000_000;
pub const MAX_DESCRIPTION_CHARS: usize = 256;
pub const MAX_METADATA_BYTES: usize = 2048;
pub const MAX_HOLD_TTL_SECONDS: u64 = 24 * 60 * 60;
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 128;
pub const MAX_PAGE: i32 = 100;
pub const DEFAULT_PAGE: i32 = 20;

/// The body fields each write route takes; any other field is refused.
pub const SPEND_FIELDS: &[&str] = &["user_id", "tokens", "description", "metadata"];
pub const HOLD_FIELDS: &[&str] = &["user_id", "tokens", "ttl_seconds", "description", "metadata"];
pub const CAPTURE_FIELDS: &[&str] = &["tokens", "description"];
pub const RELEASE_FIELDS: &[&str] = &[];
pub const REFUND_FIELDS: &[&str] = &["transaction_id", "tokens", "reason"];

/// A JSON object body with only the `allowed` fields.
pub struct Body {
    fields: Map<String, Value>,
    /// Hash of the body's canonical form: what makes a repeat "the same request".
    pub fingerprint: String,
}

impl Body {
    pub fn parse(bytes: &[u8], allowed: &[&str]) -> Result<Self, ApiError> {
        let value: Value = if bytes.iter().all(u8::is_ascii_whitespace) {
            // An empty body is an empty object (release takes none).
            Value::Object(Map::new())
        } else {
            serde_json::from_slice(bytes)
                .map_err(|e| ApiError::bad_request("invalid_json", format!("the body is not valid JSON: {e}")))?
        };
        let Value::Object(fields) = value else {
            return Err(ApiError::bad_request("invalid_json", "the body must be a JSON object"));
        };
        if let Some(unknown) = fields.keys().find(|name| !allowed.contains(&name.as_str())) {
            return Err(ApiError::bad_request(
                "unknown_field",
                format!("unknown field {unknown:?}; allowed: {}", allowed.join(", ")),
            ));
        }
        // serde_json's map is ordered by key, so this text is canonical.
        let canonical = serde_json::to_string(&fields).unwrap_or_default();
        let fingerprint = hex::encode(&Sha256::digest(canonical.as_bytes())[..12]);
        Ok(Self { fields, fingerprint })
    }

    /// Completes a balance request with what every write carries: the body's
    /// fingerprint, the calling key, and the optional text and metadata the
    /// route allows (unknown fields were refused at parse).
    pub fn annotate(&self, request: BalanceRequest, reference: &str) -> Result<BalanceRequest, ApiError> {
        let mut request = request.fingerprinted(&self.fingerprint).reference(reference);
        request.description = match self.text("description")? {
            Some(text) => Some(text),
            None => self.text("reason")?,
        };
        request.metadata = self.metadata()?;
        Ok(request)
    }

    fn required(&self, name: &'static str) -> Result<&Value, ApiError> {
        match self.fields.get(name) {
            None | Some(Value::Null) => Err(ApiError::bad_request("missing_field", format!("{name} is required"))),
            Some(value) => Ok(value),
        }
    }

    fn optional(&self, name: &str) -> Option<&Value> {
        self.fields.get(name).filter(|v| !v.is_null())
    }

    pub fn user_id(&self) -> Result<UserId, ApiError> {
        let value = self.required("user_id")?;
        value.as_i64().and_then(|id| UserId::new(id).ok()).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_field",
                "user_id must be a Telegram user id (a positive integer)",
            )
        })
    }

    pub fn tokens(&self) -> Result<Tokens, ApiError> {
        amount(self.required("tokens")?)
    }

    pub fn ttl_seconds(&self) -> Result<chrono::Duration, ApiError> {
        let value = self.required("ttl_seconds")?;
        value
            .as_u64()
            .filter(|s| (1..=MAX_HOLD_TTL_SECONDS).contains(s))
            .map(|s| chrono::Duration::seconds(s as i64))
            .ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_field",
                    format!("ttl_seconds must be a whole number of seconds in 1..={MAX_HOLD_TTL_SECONDS}"),
                )
            })
    }

    pub fn transaction_id(&self) -> Result<TxId, ApiError> {
        let value = self.required("transaction_id")?;
        value
            .as_str()
            .and_then(|text| text.parse().ok())
            .ok_or_else(|| ApiError::bad_request("invalid_field", "transaction_id must be an id returned by this API"))
    }

    /// Optional free text: printable, at most [`MAX_DESCRIPTION_CHARS`].
    pub fn text(&self, name: &'static str) -> Result<Option<String>, ApiError> {
        let Some(value) = self.optional(name) else {
            return Ok(None);
        };
        let text = value
            .as_str()
            .ok_or_else(|| ApiError::bad_request("invalid_field", format!("{name} must be a string")))?;
        if text.chars().count() > MAX_DESCRIPTION_CHARS {
            return Err(ApiError::bad_request(
                "invalid_field",
                format!("{name} is longer than {MAX_DESCRIPTION_CHARS} characters"),
            ));
        }
        if text.chars().any(char::is_control) {
            return Err(ApiError::bad_request(
                "invalid_field",
                format!("{name} contains control characters"),
            ));
        }
        Ok(Some(text.to_owned()))
    }

    /// Optional caller data: a JSON object, at most [`MAX_METADATA_BYTES`].
    pub fn metadata(&self) -> Result<Option<String>, ApiError> {
        let Some(value) = self.optional("metadata") else {
            return Ok(None);
        };
        if !value.is_object() {
            return Err(ApiError::bad_request("invalid_field", "metadata must be a JSON object"));
        }
        let text = value.to_string();
        if text.len() > MAX_METADATA_BYTES {
            return Err(ApiError::bad_request(
                "invalid_field",
                format!("metadata is larger than {MAX_METADATA_BYTES} bytes"),
            ));
        }
        Ok(Some(text))
    }
}

/// A token amount: a whole number in 1..=[`MAX_REQUEST_TOKENS`]. JSON
/// numbers that are negative, fractional or too big for `u64` all fail
/// `as_u64`.
fn amount(value: &Value) -> Result<Tokens, ApiError> {
    value
        .as_u64()
        .filter(|n| (1..=MAX_REQUEST_TOKENS).contains(n))
        .and_then(|n| Tokens::positive(n).ok())
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_amount",
                format!("tokens must be a whole number in 1..={MAX_REQUEST_TOKENS}, not {value}"),
            )
        })
}

/// The `Idempotency-Key` header, scoped to the calling key so two services
/// can never collide on each other's keys.
pub fn idempotency_key(header: Option<&http::HeaderValue>, service_key: &str) -> Result<IdempotencyKey, ApiError> {
    let header = header
        .ok_or_else(|| ApiError::bad_request("idempotency_key_missing", "writes need an Idempotency-Key header"))?;
    let text = header.to_str().unwrap_or_default();
    let valid = !text.is_empty() && text.len() <= MAX_IDEMPOTENCY_KEY_LEN && text.bytes().all(|b| b.is_ascii_graphic());
    if !valid {
        return Err(ApiError::bad_request(
            "idempotency_key_invalid",
            format!("Idempotency-Key must be 1..={MAX_IDEMPOTENCY_KEY_LEN} visible ASCII characters"),
        ));
    }
    IdempotencyKey::new(format!("api:{service_key}:{text}"))
        .map_err(|e| ApiError::bad_request("idempotency_key_invalid", e.to_string()))
}

pub fn path_user(text: &str) -> Result<UserId, ApiError> {
    text.parse()
        .map_err(|_| ApiError::bad_request("invalid_field", format!("{text:?} is not a Telegram user id")))
}

pub fn path_hold(text: &str) -> Result<TxId, ApiError> {
    text.parse()
        .map_err(|_| ApiError::bad_request("invalid_field", format!("{text:?} is not a hold id")))
}

/// `?cursor=&limit=` of the transactions list.
pub fn page_query(query: &str, user: UserId) -> Result<(Option<TxId>, i32), ApiError> {
    let (mut cursor, mut limit) = (None, DEFAULT_PAGE);
    for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
        match name.as_ref() {
            "cursor" if value.is_empty() => {}
            "cursor" => {
                let tx: TxId = value.parse().ok().filter(|tx: &TxId| tx.user == user).ok_or_else(|| {
                    ApiError::bad_request("invalid_field", "cursor is not one this API returned for this user")
                })?;
                cursor = Some(tx);
            }
            "limit" => {
                limit = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_PAGE).contains(n))
                    .ok_or_else(|| {
                        ApiError::bad_request("invalid_field", format!("limit must be in 1..={MAX_PAGE}"))
                    })?;
            }
            other => {
                return Err(ApiError::bad_request(
                    "unknown_field",
                    format!("unknown query parameter {other:?}; allowed: cursor, limit"),
                ));
            }
        }
    }
    Ok((cursor, limit))
}
