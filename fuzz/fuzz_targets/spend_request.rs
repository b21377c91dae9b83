//! The spend API's request parsing: bodies, paths, queries, the
//! `Idempotency-Key` and `Authorization` values. Every input is accepted
//! within the documented bounds or refused with a 4xx JSON error carrying
//! its stable code, never a panic.
//!
//! Input: one selector byte, then `line \n header \n body`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use spend_api::ApiError;
use spend_api::request::{self, Body};
use tokenbill::domain::ledger::DebitKind;
use tokenbill::domain::service_key::SecretKey;
use tokenbill::domain::{IdempotencyKey, Tokens, UserId};
use tokenbill::store::BalanceRequest;

const ROUTES: [&[&str]; 5] = [
    request::SPEND_FIELDS,
    request::HOLD_FIELDS,
    request::CAPTURE_FIELDS,
    request::RELEASE_FIELDS,
    request::REFUND_FIELDS,
];

/// A refusal is a 4xx whose JSON body names its code.
fn check_refusal(err: ApiError) {
    assert!(err.status.is_client_error(), "{} for {}", err.status, err.code);
    let code = err.code;
    let response = err.into_response();
    let body: Value = serde_json::from_str(response.body()).expect("errors are JSON");
    assert_eq!(body["error"]["code"], code);
}

fn check<T>(result: Result<T, ApiError>) -> Option<T> {
    result.map_err(check_refusal).ok()
}

fn split_line(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == b'\n') {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[]),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let (line, rest) = split_line(rest);
    let (header, body) = split_line(rest);
    let line = String::from_utf8_lossy(line);

    // Paths and queries.
    let user = check(request::path_user(&line));
    if let Some(user) = user {
        assert!(user.get() > 0);
    }
    check(request::path_hold(&line));
    let owner = user.unwrap_or_else(|| UserId::new(42).expect("a valid user"));
    if let Some((_, limit)) = check(request::page_query(&line, owner)) {
        assert!((1..=request::MAX_PAGE).contains(&limit));
    }
    // The bearer token: only well-formed keys are looked up.
    if let Some(key) = SecretKey::parse(&line) {
        assert_eq!(key.reveal(), line);
        assert_eq!(key.hash().as_str().len(), 64);
    }
    let idempotency = http::HeaderValue::from_bytes(header).ok();
    check(request::idempotency_key(idempotency.as_ref(), "0123456789ab"));

    // The body, for the route the selector picks.
    let fields = ROUTES[usize::from(selector) % ROUTES.len()];
    let Some(parsed) = check(Body::parse(body, fields)) else {
        return;
    };
    assert_eq!(parsed.fingerprint.len(), 24);
    let again = Body::parse(body, fields).expect("parsing is deterministic");
    assert_eq!(again.fingerprint, parsed.fingerprint);
    if let Some(user) = check(parsed.user_id()) {
        assert!(user.get() > 0);
    }
    if let Some(tokens) = check(parsed.tokens()) {
        assert!((1..=request::MAX_REQUEST_TOKENS).contains(&tokens.get()));
    }
    if let Some(ttl) = check(parsed.ttl_seconds()) {
        assert!(ttl.num_seconds() >= 1 && ttl.num_seconds() as u64 <= request::MAX_HOLD_TTL_SECONDS);
    }
    check(parsed.transaction_id());
    let template = BalanceRequest::debit(
        owner,
        DebitKind::Spend,
        Tokens::new(1).expect("one token"),
        IdempotencyKey::new("fuzz").expect("a valid key"),
    );
    if let Some(annotated) = check(parsed.annotate(template, "key:0123456789ab")) {
        if let Some(text) = &annotated.description {
            assert!(text.chars().count() <= request::MAX_DESCRIPTION_CHARS);
            assert!(!text.chars().any(char::is_control));
        }
        if let Some(metadata) = &annotated.metadata {
            assert!(metadata.len() <= request::MAX_METADATA_BYTES);
            let value: Value = serde_json::from_str(metadata).expect("stored metadata is JSON");
            assert!(value.is_object());
        }
    }
});
