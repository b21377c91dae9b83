//! The spend API against its contract, `docs/openapi.yaml`.
//!
//! Every answer the real handler gives (in process, on DynamoDB Local) is
//! checked against the operation it was sent to: the status must be
//! declared, every header it carries must be declared and valid (and every
//! required one present), and the body must match the response's schema,
//! `$ref`s resolved to the spec's components. Request bodies are checked
//! too: what the handler accepts the spec must accept, and what it refuses
//! as malformed the spec must refuse.
//!
//! Coverage keeps the spec honest the other way: every status of every
//! operation and every error code the spec declares must have been seen,
//! and the handler's source is scanned for routes and error codes that the
//! spec does not list.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use serde_json::{Value, json};
use spend_api::{SpendApi, SpendConfig};
use tokenbill::domain::TariffId;
use tokenbill::domain::ledger::CreditKind;
use tokenbill::domain::service_key::{RatePerSecond, Scope};
use tokenbill::domain::subscription::{Subscription, SubscriptionStatus};
use tokenbill::store::{BalanceRequest, item, keys};
use tokenbill::{ManualClock, Store};
use tokenbill_tests::faults::{DynamoFaults, faulty_store};
use tokenbill_tests::{dynamodb, fresh_store, key, register, sdk_config, service_key, tokens, user};

const SPEC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/openapi.yaml");
const HANDLER_SOURCES: [&str; 3] = [
    concat!(env!("CARGO_MANIFEST_DIR"), "/../functions/spend-api/src/lib.rs"),
    concat!(env!("CARGO_MANIFEST_DIR"), "/../functions/spend-api/src/error.rs"),
    concat!(env!("CARGO_MANIFEST_DIR"), "/../functions/spend-api/src/request.rs"),
];
/// Where the spec lists what the function answers to requests that match
/// none of its operations.
const UNROUTED: &str = "x-unrouted";

// ---------------------------------------------------------------------------
// The contract: the spec, a checker, and what has been seen.

struct Contract {
    doc: Value,
    validators: Mutex<HashMap<String, Arc<jsonschema::Validator>>>,
    seen: Mutex<Seen>,
}

#[derive(Default)]
struct Seen {
    /// (operationId or `x-unrouted`, status)
    answers: BTreeSet<(String, u16)>,
    codes: BTreeSet<String>,
}

/// The operation (or the unrouted fallback) a request goes to.
struct Matched<'a> {
    name: String,
    operation: Option<&'a Value>,
    responses: &'a Value,
}

impl Contract {
    fn load() -> Self {
        let text = std::fs::read_to_string(SPEC).unwrap_or_else(|e| panic!("read {SPEC}: {e}"));
        Self::parse(&text)
    }

    fn parse(text: &str) -> Self {
        let doc: Value = serde_yaml::from_str(text).expect("docs/openapi.yaml is valid YAML");
        assert_eq!(doc["openapi"].as_str().map(|v| &v[..4]), Some("3.1."), "OpenAPI 3.1");
        Self {
            doc,
            validators: Mutex::default(),
            seen: Mutex::default(),
        }
    }

    /// Follows local `$ref`s.
    fn resolve<'a>(&'a self, mut value: &'a Value) -> &'a Value {
        for _ in 0..16 {
            let Some(reference) = value.get("$ref").and_then(Value::as_str) else {
                return value;
            };
            let pointer = reference
                .strip_prefix('#')
                .unwrap_or_else(|| panic!("only local $refs are used: {reference}"));
            value = self
                .doc
                .pointer(pointer)
                .unwrap_or_else(|| panic!("$ref {reference} does not resolve"));
        }
        panic!("$ref chain too long (a cycle?)")
    }

    fn route(&self, method: &Method, path: &str) -> Matched<'_> {
        let segments: Vec<&str> = path.split('/').skip(1).collect();
        let paths = self.doc["paths"].as_object().expect("paths");
        for (template, item) in paths {
            let parts: Vec<&str> = template.split('/').skip(1).collect();
            let matches = parts.len() == segments.len()
                && parts.iter().zip(&segments).all(|(part, segment)| {
                    if part.starts_with('{') {
                        !segment.is_empty()
                    } else {
                        part == segment
                    }
                });
            if !matches {
                continue;
            }
            if let Some(operation) = item.get(method.as_str().to_ascii_lowercase()) {
                return Matched {
                    name: operation["operationId"].as_str().expect("operationId").to_owned(),
                    operation: Some(operation),
                    responses: &operation["responses"],
                };
            }
            break;
        }
        Matched {
            name: UNROUTED.to_owned(),
            operation: None,
            responses: &self.doc[UNROUTED]["responses"],
        }
    }

    /// A validator for `schema`, whose `$ref`s point into the spec's components.
    fn validator(&self, schema: &Value) -> Arc<jsonschema::Validator> {
        let mut cache = self.validators.lock().unwrap();
        cache
            .entry(schema.to_string())
            .or_insert_with(|| {
                let root = json!({
                    "$schema": "https://json-schema.org/draft/2020-12/schema",
                    "components": self.doc["components"],
                    "allOf": [schema],
                });
                let validator = jsonschema::options()
                    .with_draft(jsonschema::Draft::Draft202012)
                    .should_validate_formats(true)
                    .build(&root)
                    .unwrap_or_else(|e| panic!("schema does not compile: {e}\n{schema}"));
                Arc::new(validator)
            })
            .clone()
    }

    fn schema_errors(&self, schema: &Value, instance: &Value) -> Vec<String> {
        let validator = self.validator(schema);
        validator
            .iter_errors(instance)
            .map(|e| format!("{e} (at {:?})", e.instance_path().to_string()))
            .collect()
    }

    /// Checks one answer against the spec and records it as seen.
    fn check(&self, method: &Method, path: &str, response: &Response<String>) -> Result<(), String> {
        let matched = self.route(method, path);
        let status = response.status().as_u16();
        let declared = matched
            .responses
            .get(status.to_string())
            .ok_or_else(|| format!("status {status} is not declared for {}", matched.name))?;
        let declared = self.resolve(declared);

        let headers = declared
            .get("headers")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        for (name, header) in &headers {
            let header = self.resolve(header);
            match response.headers().get(name.as_str()) {
                None if header["required"] == true => return Err(format!("required header {name} is missing")),
                None => {}
                Some(value) => {
                    let text = value
                        .to_str()
                        .map_err(|_| format!("header {name} is not visible ASCII"))?;
                    let schema = &header["schema"];
                    let value = match self.resolve(schema).get("type").and_then(Value::as_str) {
                        Some("integer") => text
                            .parse::<i64>()
                            .map(Value::from)
                            .map_err(|_| format!("header {name}: {text:?} is not an integer"))?,
                        _ => Value::String(text.to_owned()),
                    };
                    let errors = self.schema_errors(schema, &value);
                    if !errors.is_empty() {
                        return Err(format!("header {name}: {text:?}: {errors:?}"));
                    }
                }
            }
        }
        for name in response.headers().keys() {
            if name == http::header::CONTENT_TYPE {
                continue;
            }
            if !headers
                .keys()
                .any(|declared| declared.eq_ignore_ascii_case(name.as_str()))
            {
                return Err(format!("header {name} is not declared for {} {status}", matched.name));
            }
        }

        let content_type = response
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .ok_or("no Content-Type")?;
        let media = declared["content"]
            .get(content_type)
            .ok_or_else(|| format!("Content-Type {content_type} is not declared"))?;
        let body: Value = serde_json::from_str(response.body()).map_err(|e| format!("the body is not JSON: {e}"))?;
        let errors = self.schema_errors(&media["schema"], &body);
        if !errors.is_empty() {
            return Err(format!("the body does not match the schema: {errors:#?}"));
        }

        let mut seen = self.seen.lock().unwrap();
        seen.answers.insert((matched.name, status));
        if let Some(code) = body.pointer("/error/code").and_then(Value::as_str) {
            seen.codes.insert(code.to_owned());
        }
        Ok(())
    }

    /// Problems the spec finds with a request body (`None`: the operation
    /// takes no body).
    fn request_errors(&self, method: &Method, path: &str, body: &Value) -> Option<Vec<String>> {
        let matched = self.route(method, path);
        let request_body = self.resolve(matched.operation?.get("requestBody")?);
        Some(self.schema_errors(&request_body["content"]["application/json"]["schema"], body))
    }

    fn operations(&self) -> Vec<(String, String, &Value)> {
        let mut found = Vec::new();
        for (path, item) in self.doc["paths"].as_object().expect("paths") {
            for (method, operation) in item.as_object().expect("path item") {
                if operation.get("responses").is_some() {
                    found.push((path.clone(), method.to_ascii_uppercase(), operation));
                }
            }
        }
        found
    }

    /// Every (operation, status) the spec declares.
    fn declared_answers(&self) -> BTreeSet<(String, u16)> {
        let mut declared = BTreeSet::new();
        let mut add = |name: &str, responses: &Value| {
            for status in responses.as_object().expect("responses").keys() {
                declared.insert((name.to_owned(), status.parse().expect("numeric status")));
            }
        };
        for (_, _, operation) in self.operations() {
            add(operation["operationId"].as_str().unwrap(), &operation["responses"]);
        }
        add(UNROUTED, &self.doc[UNROUTED]["responses"]);
        declared
    }

    fn error_codes(&self) -> BTreeSet<String> {
        self.doc["components"]["schemas"]["ErrorCode"]["enum"]
            .as_array()
            .expect("ErrorCode enum")
            .iter()
            .map(|code| code.as_str().unwrap().to_owned())
            .collect()
    }
}

/// Every code a schema's `error.code` may take (through `oneOf`s).
fn codes_in(contract: &Contract, schema: &Value, found: &mut BTreeSet<String>) {
    let schema = contract.resolve(schema);
    if let Some(code) = schema.pointer("/properties/code") {
        let code = contract.resolve(code);
        if let Some(value) = code.get("const").and_then(Value::as_str) {
            found.insert(value.to_owned());
        }
        for value in code.get("enum").and_then(Value::as_array).into_iter().flatten() {
            found.insert(value.as_str().unwrap().to_owned());
        }
    }
    for key in ["oneOf", "anyOf", "allOf"] {
        for sub in schema.get(key).and_then(Value::as_array).into_iter().flatten() {
            codes_in(contract, sub, found);
        }
    }
    if let Some(error) = schema.pointer("/properties/error") {
        codes_in(contract, error, found);
    }
}

// ---------------------------------------------------------------------------
// Calling the handler.

#[derive(Clone)]
struct Call {
    method: Method,
    uri: String,
    headers: Vec<(&'static str, Vec<u8>)>,
    body: Vec<u8>,
    /// The body breaks a rule the spec states (so its schema must refuse it).
    body_fault: bool,
    /// The body breaks a rule JSON Schema cannot state (a byte size, `1.0`
    /// for an integer): the spec says it in words only.
    schema_blind: bool,
}

impl Call {
    fn get(uri: impl Into<String>) -> Self {
        Self {
            method: Method::GET,
            uri: uri.into(),
            headers: Vec::new(),
            body: Vec::new(),
            body_fault: false,
            schema_blind: false,
        }
    }

    fn post(uri: impl Into<String>, idempotency: &str, body: Value) -> Self {
        Self {
            method: Method::POST,
            ..Self::get(uri)
        }
        .header("content-type", "application/json")
        .header("idempotency-key", idempotency)
        .body(body.to_string())
    }

    fn method(mut self, method: Method) -> Self {
        self.method = method;
        self
    }

    fn header(mut self, name: &'static str, value: impl AsRef<[u8]>) -> Self {
        self.headers.retain(|(n, _)| *n != name);
        self.headers.push((name, value.as_ref().to_vec()));
        self
    }

    fn without(mut self, name: &'static str) -> Self {
        self.headers.retain(|(n, _)| *n != name);
        self
    }

    fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    fn body_fault(mut self) -> Self {
        self.body_fault = true;
        self
    }

    fn schema_blind(mut self) -> Self {
        self.schema_blind = true;
        self
    }
}

#[derive(Debug)]
struct Answer {
    status: StatusCode,
    headers: http::HeaderMap,
    body: Value,
}

impl Answer {
    fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn ok(self) -> Value {
        assert_eq!(self.status, StatusCode::OK, "{}", self.body);
        self.body
    }

    #[track_caller]
    fn refused(&self, status: u16, code: &str) {
        assert_eq!(
            (self.status.as_u16(), self.code()),
            (status, code),
            "answer: {}",
            self.body
        );
    }
}

struct Caller<'a> {
    api: &'a SpendApi,
    contract: &'a Contract,
    /// The service key sent as `Authorization: Bearer`, unless the call sets its own.
    key: Option<&'a str>,
}

impl<'a> Caller<'a> {
    fn with_key(&self, key: Option<&'a str>) -> Caller<'a> {
        Caller { key, ..*self }
    }

    fn on(&self, api: &'a SpendApi) -> Caller<'a> {
        Caller { api, ..*self }
    }

    async fn send(&self, call: Call) -> Answer {
        let mut request = Request::builder().method(call.method.clone()).uri(&call.uri);
        if let Some(key) = self.key
            && !call.headers.iter().any(|(name, _)| *name == "authorization")
        {
            request = request.header("authorization", format!("Bearer {key}"));
        }
        for (name, value) in &call.headers {
            request = request.header(*name, HeaderValue::from_bytes(value).expect("a header value"));
        }
        // Boxed: the handler's future is large, and a test makes hundreds of calls.
        let response = Box::pin(self.api.handle(request.body(call.body.clone()).unwrap())).await;
        let path = call.uri.split('?').next().unwrap_or_default();
        let shown = String::from_utf8_lossy(&call.body)
            .chars()
            .take(300)
            .collect::<String>();
        if let Err(problem) = self.contract.check(&call.method, path, &response) {
            panic!(
                "the spec and the handler disagree on {} {} {shown}\n  {problem}\n  answer: {} {:?} {}",
                call.method,
                call.uri,
                response.status(),
                response.headers(),
                response.body()
            );
        }
        let (parts, body) = response.into_parts();
        let answer = Answer {
            status: parts.status,
            headers: parts.headers,
            body: serde_json::from_str(&body).unwrap(),
        };
        self.check_request(&call, path, &answer, &shown);
        answer
    }

    /// What the handler accepted the spec must accept; what it refused as
    /// a malformed body the spec must refuse.
    fn check_request(&self, call: &Call, path: &str, answer: &Answer, shown: &str) {
        if call.method != Method::POST || call.schema_blind {
            return;
        }
        let must_be_valid = match (answer.status.as_u16(), answer.code()) {
            (200, _) => true,
            (400, "unknown_field" | "missing_field" | "invalid_amount") => false,
            (400, "invalid_field") if call.body_fault => false,
            _ => return,
        };
        let body = if call.body.iter().all(u8::is_ascii_whitespace) {
            json!({})
        } else {
            match serde_json::from_slice(&call.body) {
                Ok(body) => body,
                Err(_) => return,
            }
        };
        let Some(errors) = self.contract.request_errors(&call.method, path, &body) else {
            return;
        };
        if must_be_valid {
            assert!(
                errors.is_empty(),
                "the handler accepted a body the spec refuses: {} {shown}: {errors:?}",
                call.uri
            );
        } else {
            assert!(
                !errors.is_empty(),
                "the handler refused a body ({}) that the spec accepts: {} {shown}",
                answer.code(),
                call.uri
            );
        }
    }

    async fn get(&self, uri: impl Into<String>) -> Answer {
        self.send(Call::get(uri)).await
    }

    async fn post(&self, uri: impl Into<String>, idempotency: &str, body: Value) -> Answer {
        self.send(Call::post(uri, idempotency, body)).await
    }
}

// ---------------------------------------------------------------------------
// The fixture.

fn config(user_rate: u32) -> SpendConfig {
    SpendConfig {
        user_rate: RatePerSecond::new(user_rate).unwrap(),
        key_cache_ttl: Duration::from_secs(SpendConfig::DEFAULT_KEY_CACHE_SECONDS),
        low_balance_threshold: None,
    }
}

async fn funded_user(store: &Store, id: i64, balance: u64) {
    register(store, id).await;
    if balance > 0 {
        store
            .apply(BalanceRequest::credit(
                user(id),
                CreditKind::Grant,
                tokens(balance),
                key(format!("fund-{id}")),
            ))
            .await
            .unwrap();
    }
}

async fn subscribe(store: &Store, id: i64) {
    let now = store.now();
    let subscription = Subscription {
        user: user(id),
        tariff_id: TariffId::new("sub_month").unwrap(),
        status: SubscriptionStatus::Active,
        period: 1,
        period_start: now,
        period_end: now + chrono::Duration::days(30),
        period_days: 30,
        tokens_per_period: tokens(1000),
        auto_renew: true,
        renewal: None,
        failed_attempts: 0,
        next_action_at: None,
    };
    let item = item::record(&keys::subscription(user(id)), "subscription", &subscription).unwrap();
    store
        .client()
        .put_item()
        .table_name(store.table())
        .set_item(Some(item))
        .send()
        .await
        .unwrap();
}

/// A well-formed id that names nothing.
fn ghost_tx(id: i64) -> String {
    format!("{id}.{}", uuid::Uuid::now_v7().simple())
}

fn str_of(value: &Value) -> String {
    value
        .as_str()
        .unwrap_or_else(|| panic!("not a string: {value}"))
        .to_owned()
}

const RICH: i64 = 101;
const POOR: i64 = 102;
const THROTTLED: i64 = 103;
const SUBSCRIBER: i64 = 104;
const GHOST: i64 = 105;
const SLOW: i64 = 106;

// ---------------------------------------------------------------------------
// The tests.

#[tokio::test]
async fn every_answer_of_the_handler_matches_the_spec() {
    let contract = Contract::load();
    let clock = Arc::new(ManualClock::new(Utc::now()));
    let store = fresh_store().await.with_clock(clock.clone());
    funded_user(&store, RICH, 1_000_000).await;
    funded_user(&store, POOR, 100).await;
    funded_user(&store, THROTTLED, 1000).await;
    funded_user(&store, SUBSCRIBER, 0).await;
    subscribe(&store, SUBSCRIBER).await;
    funded_user(&store, SLOW, 1000).await;

    let (main, _) = service_key(&store, &[Scope::Spend, Scope::Read], 8_000).await;
    let (reader, _) = service_key(&store, &[Scope::Read], 1000).await;
    let (spender, _) = service_key(&store, &[Scope::Spend], 1000).await;
    let (slow, _) = service_key(&store, &[Scope::Spend, Scope::Read], 1).await;
    let (doomed, doomed_record) = service_key(&store, &[Scope::Spend, Scope::Read], 1000).await;

    let api = SpendApi::new(store.clone(), config(8_000));
    let c = Caller {
        api: &api,
        contract: &contract,
        key: Some(&main),
    };

    // --- reads -----------------------------------------------------------
    let balance = c.get(format!("/v1/users/{RICH}/balance")).await.ok();
    assert_eq!(
        (
            &balance["available"],
            &balance["held"],
            &balance["total"],
            &balance["subscription"]
        ),
        (&json!(1_000_000), &json!(0), &json!(1_000_000), &Value::Null)
    );
    let balance = c.get(format!("/v1/users/{SUBSCRIBER}/balance")).await.ok();
    assert_eq!(balance["subscription"]["status"], "active");
    assert_eq!(balance["subscription"]["tokens_per_period"], 1000);
    let page = c.get(format!("/v1/users/{RICH}/transactions")).await.ok();
    assert_eq!(page["transactions"][0]["kind"], "grant");
    assert_eq!(page["next_cursor"], Value::Null);
    let poor_tx =
        str_of(&c.get(format!("/v1/users/{POOR}/transactions")).await.ok()["transactions"][0]["transaction_id"]);
    for (uri, code) in [
        ("/v1/users/abc/balance".to_owned(), "invalid_field"),
        ("/v1/users/0/balance".to_owned(), "invalid_field"),
        ("/v1/users/4503599627370496/balance".to_owned(), "invalid_field"),
        ("/v1/users/-1/transactions".to_owned(), "invalid_field"),
        (format!("/v1/users/{RICH}/transactions?limit=0"), "invalid_field"),
        (format!("/v1/users/{RICH}/transactions?limit=101"), "invalid_field"),
        (format!("/v1/users/{RICH}/transactions?limit=ten"), "invalid_field"),
        (format!("/v1/users/{RICH}/transactions?cursor=nope"), "invalid_field"),
        (
            format!("/v1/users/{RICH}/transactions?cursor={poor_tx}"),
            "invalid_field",
        ),
        (format!("/v1/users/{RICH}/transactions?page=2"), "unknown_field"),
    ] {
        c.get(&uri).await.refused(400, code);
    }
    c.get(format!("/v1/users/{GHOST}/balance"))
        .await
        .refused(404, "user_not_found");
    c.get(format!("/v1/users/{GHOST}/transactions"))
        .await
        .refused(404, "user_not_found");

    // --- spend -----------------------------------------------------------
    let spend = json!({"user_id": RICH, "tokens": 10, "description": "chat completion", "metadata": {"model": "m1"}});
    let first = c.post("/v1/spend", "spend-1", spend.clone()).await;
    assert!(first.header("idempotent-replayed").is_none());
    let first = first.ok();
    assert_eq!(
        (&first["tokens"], &first["balance_after"]),
        (&json!(10), &json!(999_990))
    );
    let again = c.post("/v1/spend", "spend-1", spend.clone()).await;
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.ok(), first, "a replay answers the first answer");
    c.post("/v1/spend", "spend-1", json!({"user_id": RICH, "tokens": 11}))
        .await
        .refused(409, "idempotency_key_reused");
    let short = c
        .post("/v1/spend", "spend-poor", json!({"user_id": POOR, "tokens": 1000}))
        .await;
    short.refused(402, "insufficient_tokens");
    assert_eq!(
        (&short.body["error"]["available"], &short.body["error"]["requested"]),
        (&json!(100), &json!(1000))
    );
    c.post("/v1/spend", "spend-ghost", json!({"user_id": GHOST, "tokens": 1}))
        .await
        .refused(404, "user_not_found");
    // Limits at their edges are accepted.
    c.post(
        "/v1/spend",
        &"k".repeat(128),
        json!({"user_id": RICH, "tokens": 1, "description": "é".repeat(256)}),
    )
    .await
    .ok();
    c.send(
        Call::post(
            "/v1/spend",
            "spend-charset",
            json!({"user_id": RICH, "tokens": 1, "description": null, "metadata": null}),
        )
        .header("content-type", "application/json; charset=utf-8"),
    )
    .await
    .ok();
    c.send(Call::post("/v1/spend", "spend-no-type", json!({"user_id": RICH, "tokens": 1})).without("content-type"))
        .await
        .ok();

    // --- holds, captures, releases -------------------------------------------
    let hold = |id: i64, tokens: u64, ttl: u64| json!({"user_id": id, "tokens": tokens, "ttl_seconds": ttl});
    let h1 = c.post("/v1/holds", "hold-1", hold(RICH, 500, 60)).await.ok();
    let created = chrono::DateTime::parse_from_rfc3339(h1["created_at"].as_str().unwrap()).unwrap();
    let expires = chrono::DateTime::parse_from_rfc3339(h1["expires_at"].as_str().unwrap()).unwrap();
    assert_eq!((expires - created).num_seconds(), 60);
    let again = c.post("/v1/holds", "hold-1", hold(RICH, 500, 60)).await;
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.ok(), h1);
    c.post("/v1/holds", "hold-1", hold(RICH, 500, 61))
        .await
        .refused(409, "idempotency_key_reused");
    c.post("/v1/holds", "hold-poor", hold(POOR, 1000, 60))
        .await
        .refused(402, "insufficient_tokens");
    c.post("/v1/holds", "hold-ghost", hold(GHOST, 1, 60))
        .await
        .refused(404, "user_not_found");
    c.post("/v1/holds", "hold-max-ttl", hold(RICH, 1, 86_400)).await.ok();

    let h1_id = str_of(&h1["hold_id"]);
    let capture = |hold: &str| format!("/v1/holds/{hold}/capture");
    let release = |hold: &str| format!("/v1/holds/{hold}/release");
    let captured = c
        .post(
            capture(&h1_id),
            "cap-1",
            json!({"tokens": 300, "description": "42 chunks"}),
        )
        .await
        .ok();
    assert_eq!(
        (&captured["captured"], &captured["hold_id"]),
        (&json!(300), &h1["hold_id"])
    );
    let again = c
        .post(
            capture(&h1_id),
            "cap-1",
            json!({"tokens": 300, "description": "42 chunks"}),
        )
        .await;
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.ok(), captured);
    c.post(capture(&h1_id), "cap-1", json!({"tokens": 200}))
        .await
        .refused(409, "idempotency_key_reused");
    c.post(capture(&h1_id), "cap-2", json!({"tokens": 1}))
        .await
        .refused(409, "hold_not_active");

    let h2 = str_of(&c.post("/v1/holds", "hold-2", hold(RICH, 100, 60)).await.ok()["hold_id"]);
    let over = c.post(capture(&h2), "cap-3", json!({"tokens": 101})).await;
    over.refused(409, "capture_exceeds_hold");
    assert_eq!(over.body["error"]["held"], 100);
    let released = c.send(Call::post(release(&h2), "rel-1", json!({})).body("")).await.ok();
    assert_eq!(released["released"], 100);
    let again = c.send(Call::post(release(&h2), "rel-1", json!({})).body("")).await;
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.ok(), released);
    c.post(release(&h2), "rel-2", json!({}))
        .await
        .refused(409, "hold_not_active");
    let h3 = str_of(&c.post("/v1/holds", "hold-3", hold(RICH, 50, 60)).await.ok()["hold_id"]);
    c.send(Call::post(release(&h3), "rel-1", json!({})).body(""))
        .await
        .refused(409, "idempotency_key_reused");
    c.post(release(&h3), "rel-3", json!({})).await.ok();
    let nothing = ghost_tx(RICH);
    c.post(capture(&nothing), "cap-ghost", json!({"tokens": 1}))
        .await
        .refused(404, "hold_not_found");
    c.post(release(&nothing), "rel-ghost", json!({}))
        .await
        .refused(404, "hold_not_found");

    // Holds that expire give their tokens back.
    let h4 = str_of(&c.post("/v1/holds", "hold-4", hold(RICH, 40, 5)).await.ok()["hold_id"]);
    let h5 = str_of(&c.post("/v1/holds", "hold-5", hold(RICH, 60, 5)).await.ok()["hold_id"]);
    let h6 = str_of(&c.post("/v1/holds", "hold-6", hold(RICH, 30, 5)).await.ok()["hold_id"]);
    let before = c.get(format!("/v1/users/{RICH}/balance")).await.ok();
    clock.advance(chrono::Duration::seconds(6));
    c.post(capture(&h4), "cap-4", json!({"tokens": 10}))
        .await
        .refused(409, "hold_expired");
    assert_eq!(c.post(release(&h6), "rel-6", json!({})).await.ok()["released"], 30);
    let after = c.get(format!("/v1/users/{RICH}/balance")).await.ok();
    assert_eq!(
        after["held"],
        before["held"].as_u64().unwrap() - 130,
        "all three holds are given back"
    );
    assert_eq!(after["total"], before["total"]);
    c.post(release(&h5), "rel-5", json!({}))
        .await
        .refused(409, "hold_not_active");

    // --- refunds ---------------------------------------------------------
    let spent = c
        .post("/v1/spend", "spend-r", json!({"user_id": RICH, "tokens": 50}))
        .await
        .ok();
    let t = str_of(&spent["transaction_id"]);
    let refund = json!({"transaction_id": t, "tokens": 20, "reason": "the model failed"});
    let refunded = c.post("/v1/refunds", "ref-1", refund.clone()).await.ok();
    assert_eq!((&refunded["refunded"], &refunded["refund_of"]), (&json!(20), &json!(t)));
    let again = c.post("/v1/refunds", "ref-1", refund.clone()).await;
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.ok(), refunded);
    c.post("/v1/refunds", "ref-1", json!({"transaction_id": t, "tokens": 21}))
        .await
        .refused(409, "idempotency_key_reused");
    let too_much = c
        .post("/v1/refunds", "ref-2", json!({"transaction_id": t, "tokens": 31}))
        .await;
    too_much.refused(409, "refund_exceeds_remaining");
    assert_eq!(too_much.body["error"]["refundable"], 30);
    c.post("/v1/refunds", "ref-3", json!({"transaction_id": h1_id, "tokens": 1}))
        .await
        .refused(409, "not_refundable");
    c.post(
        "/v1/refunds",
        "ref-4",
        json!({"transaction_id": captured["transaction_id"], "tokens": 300}),
    )
    .await
    .ok();
    c.post(
        "/v1/refunds",
        "ref-5",
        json!({"transaction_id": ghost_tx(RICH), "tokens": 1}),
    )
    .await
    .refused(404, "transaction_not_found");
    // Only what this key spent: another key's spends and the bot's grants are not found.
    c.with_key(Some(&spender))
        .post("/v1/refunds", "ref-6", json!({"transaction_id": t, "tokens": 1}))
        .await
        .refused(404, "transaction_not_found");
    c.post("/v1/refunds", "ref-7", json!({"transaction_id": poor_tx, "tokens": 1}))
        .await
        .refused(404, "transaction_not_found");

    // --- the ledger, page by page ------------------------------------------
    let mut cursor = String::new();
    let mut kinds = BTreeSet::new();
    let mut pages = 0;
    loop {
        let page = c
            .get(format!("/v1/users/{RICH}/transactions?limit=3&cursor={cursor}"))
            .await
            .ok();
        pages += 1;
        for entry in page["transactions"].as_array().unwrap() {
            kinds.insert(str_of(&entry["kind"]));
            if entry["transaction_id"] == first["transaction_id"] {
                assert_eq!(entry["metadata"], json!({"model": "m1"}));
                assert_eq!(entry["description"], "chat completion");
            }
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = next.to_owned(),
            None => break,
        }
    }
    assert!(pages > 3, "several pages");
    let expected: BTreeSet<String> = ["grant", "spend", "hold", "capture", "release", "refund"]
        .map(String::from)
        .into();
    assert_eq!(kinds, expected);

    // --- malformed requests --------------------------------------------------
    let live = str_of(&c.post("/v1/holds", "hold-7", hold(RICH, 10, 600)).await.ok()["hold_id"]);
    Box::pin(malformed_requests(&c, &live, &t)).await;

    // --- auth, scopes, media types, sizes, routes ----------------------------
    let every_operation = every_operation(&live, &t);
    let anonymous = c.with_key(None);
    for call in &every_operation {
        anonymous.send(call.clone()).await.refused(401, "unauthorized");
    }
    let unknown = tokenbill::domain::service_key::SecretKey::generate()
        .reveal()
        .to_owned();
    for authorization in [
        format!("Bearer {unknown}"),
        format!("Token {main}"),
        format!("Basic {main}"),
        "Bearer tbk_123".to_owned(),
        format!("Bearer {}", main.to_uppercase()),
        String::new(),
    ] {
        let call = every_operation[0].clone().header("authorization", authorization);
        c.send(call).await.refused(401, "unauthorized");
    }
    for call in &every_operation {
        let key = if call.method == Method::GET { &spender } else { &reader };
        c.with_key(Some(key)).send(call.clone()).await.refused(403, "forbidden");
    }
    for call in every_operation.iter().filter(|call| call.method == Method::POST) {
        c.send(call.clone().header("content-type", "text/plain"))
            .await
            .refused(415, "unsupported_media_type");
    }
    let oversized = vec![b' '; spend_api::MAX_BODY + 1];
    for call in &every_operation {
        c.send(call.clone().body(oversized.clone()))
            .await
            .refused(413, "body_too_large");
    }
    c.send(Call::get("/v1/nowhere").method(Method::POST).body(oversized.clone()))
        .await
        .refused(413, "body_too_large");
    for (method, uri) in [
        (Method::GET, "/v1/spend".to_owned()),
        (Method::PUT, "/v1/holds".to_owned()),
        (Method::DELETE, format!("/v1/users/{RICH}/balance")),
        (Method::POST, format!("/v1/users/{RICH}/transactions")),
        (Method::GET, capture(&live)),
        (Method::DELETE, release(&live)),
        (Method::GET, "/v1/refunds".to_owned()),
    ] {
        c.send(Call::get(uri).method(method))
            .await
            .refused(405, "method_not_allowed");
    }
    for uri in [
        "/",
        "/v1",
        "/v1/nowhere",
        "/v2/spend",
        "/v1/users/1",
        "/v1/holds/1/settle",
    ] {
        c.get(uri).await.refused(404, "no_route");
    }

    // --- rate limits ---------------------------------------------------------
    // The slow key may make one request a second (the clock stands still).
    // Its hold (a key settles only its own), made in the second before.
    let s = c.with_key(Some(&slow));
    let h_slow = str_of(&s.post("/v1/holds", "slow-h", hold(SLOW, 5, 600)).await.ok()["hold_id"]);
    clock.advance(chrono::Duration::seconds(1));
    // Its one request of this second: a spend of its own (refunds need one).
    let t_slow = str_of(
        &s.post("/v1/spend", "slow-1", json!({"user_id": SLOW, "tokens": 1}))
            .await
            .ok()["transaction_id"],
    );
    for call in every_operation_of(SLOW, &h_slow, &t_slow) {
        let answer = s.send(call).await;
        answer.refused(429, "rate_limited");
        assert_eq!(answer.header("retry-after"), Some("1"));
    }
    // One write a second per user, across keys.
    let one_per_user = SpendApi::new(store.clone(), config(1));
    let u = c.on(&one_per_user);
    u.post("/v1/spend", "user-1", json!({"user_id": THROTTLED, "tokens": 1}))
        .await
        .ok();
    let answer = u
        .post("/v1/spend", "user-2", json!({"user_id": THROTTLED, "tokens": 1}))
        .await;
    answer.refused(429, "rate_limited");
    assert!(answer.body["error"]["message"].as_str().unwrap().contains("user"));
    u.post("/v1/holds", "user-3", hold(THROTTLED, 1, 60))
        .await
        .refused(429, "rate_limited");
    // A new window, a new allowance.
    clock.advance(chrono::Duration::seconds(1));
    u.post("/v1/spend", "user-2", json!({"user_id": THROTTLED, "tokens": 1}))
        .await
        .ok();

    // --- revoked keys --------------------------------------------------------
    let d = c.with_key(Some(&doomed));
    d.get(format!("/v1/users/{RICH}/balance")).await.ok();
    store.revoke_service_key(&doomed_record.id).await.unwrap();
    d.get(format!("/v1/users/{RICH}/balance")).await.ok();
    let cold = SpendApi::new(store.clone(), config(8_000));
    let d = d.on(&cold);
    d.get(format!("/v1/users/{RICH}/balance"))
        .await
        .refused(401, "unauthorized");
    d.post("/v1/spend", "doomed-1", json!({"user_id": RICH, "tokens": 1}))
        .await
        .refused(401, "unauthorized");

    // --- the store failing ---------------------------------------------------
    // A table that does not exist: a fault no retry fixes.
    let broken = SpendApi::new(Store::new(dynamodb().await, "tokenbill-no-such-table"), config(100));
    for call in &every_operation {
        c.on(&broken).send(call.clone()).await.refused(500, "internal");
    }
    // DynamoDB unreachable: retry later.
    let unreachable = aws_sdk_dynamodb::config::Builder::from(&sdk_config().await)
        .endpoint_url("http://127.0.0.1:1")
        .retry_config(aws_sdk_dynamodb::config::retry::RetryConfig::disabled())
        .build();
    let down = SpendApi::new(
        Store::new(
            aws_sdk_dynamodb::Client::from_conf(unreachable),
            store.table().to_owned(),
        ),
        config(100),
    );
    for call in &every_operation {
        let answer = c.on(&down).send(call.clone()).await;
        answer.refused(503, "unavailable");
        assert_eq!(answer.header("retry-after"), Some("1"));
    }
    Box::pin(mid_write_failure_is_retried_with_the_same_key(&contract)).await;

    // --- coverage --------------------------------------------------------------
    let seen = contract.seen.lock().unwrap();
    let missing: Vec<_> = contract.declared_answers().difference(&seen.answers).cloned().collect();
    assert!(missing.is_empty(), "declared in the spec, never answered: {missing:?}");
    let missing: Vec<_> = contract.error_codes().difference(&seen.codes).cloned().collect();
    assert!(
        missing.is_empty(),
        "error codes in the spec, never answered: {missing:?}"
    );
}

/// One well-formed request per operation, on user `RICH`.
fn every_operation(hold: &str, tx: &str) -> Vec<Call> {
    every_operation_of(RICH, hold, tx)
}

fn every_operation_of(id: i64, hold: &str, tx: &str) -> Vec<Call> {
    let fresh = || format!("op-{}", uuid::Uuid::new_v4().simple());
    vec![
        Call::get(format!("/v1/users/{id}/balance")),
        Call::get(format!("/v1/users/{id}/transactions?limit=5")),
        Call::post("/v1/spend", &fresh(), json!({"user_id": id, "tokens": 1})),
        Call::post(
            "/v1/holds",
            &fresh(),
            json!({"user_id": id, "tokens": 1, "ttl_seconds": 60}),
        ),
        Call::post(format!("/v1/holds/{hold}/capture"), &fresh(), json!({"tokens": 1})),
        Call::post(format!("/v1/holds/{hold}/release"), &fresh(), json!({})),
        Call::post("/v1/refunds", &fresh(), json!({"transaction_id": tx, "tokens": 1})),
    ]
}

/// At least one of every 400 code on every write, and the bodies the spec
/// must refuse with them.
async fn malformed_requests(c: &Caller<'_>, live_hold: &str, spent: &str) {
    let n = std::sync::atomic::AtomicUsize::new(0);
    let fresh = || format!("bad-{}", n.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    let spend = |body: Value| Call::post("/v1/spend", &fresh(), body);
    let raw = |uri: &str, body: &str| Call::post(uri, &fresh(), json!({})).body(body.to_owned());
    let hold = |body: Value| Call::post("/v1/holds", &fresh(), body);
    let capture_uri = format!("/v1/holds/{live_hold}/capture");
    let release_uri = format!("/v1/holds/{live_hold}/release");
    let capture = |body: Value| Call::post(&capture_uri, &fresh(), body);
    let refund = |body: Value| Call::post("/v1/refunds", &fresh(), body);
    // Refunds look the transaction up before reading `tokens`: a real one of this key.
    let tx = spent.to_owned();
    let cases: Vec<(Call, &str)> = vec![
        // spend
        (raw("/v1/spend", "{"), "invalid_json"),
        (raw("/v1/spend", "[1]"), "invalid_json"),
        (raw("/v1/spend", "null"), "invalid_json"),
        (raw("/v1/spend", "\"spend\""), "invalid_json"),
        (
            raw("/v1/spend", "{\"user_id\": 101, \"tokens\": 1} trailing"),
            "invalid_json",
        ),
        (raw("/v1/spend", ""), "missing_field"),
        (
            spend(json!({"user_id": RICH, "tokens": 1, "model": "m1"})),
            "unknown_field",
        ),
        (spend(json!({"tokens": 1})), "missing_field"),
        (spend(json!({"user_id": RICH})), "missing_field"),
        (spend(json!({"user_id": null, "tokens": 1})), "missing_field"),
        (spend(json!({"user_id": RICH, "tokens": null})), "missing_field"),
        (
            spend(json!({"user_id": "101", "tokens": 1})).body_fault(),
            "invalid_field",
        ),
        (spend(json!({"user_id": 0, "tokens": 1})).body_fault(), "invalid_field"),
        (spend(json!({"user_id": -5, "tokens": 1})).body_fault(), "invalid_field"),
        (
            spend(json!({"user_id": 1.5, "tokens": 1})).body_fault(),
            "invalid_field",
        ),
        (
            spend(json!({"user_id": 4_503_599_627_370_496_i64, "tokens": 1})).body_fault(),
            "invalid_field",
        ),
        (spend(json!({"user_id": RICH, "tokens": 0})), "invalid_amount"),
        (spend(json!({"user_id": RICH, "tokens": -1})), "invalid_amount"),
        (spend(json!({"user_id": RICH, "tokens": 1.5})), "invalid_amount"),
        (spend(json!({"user_id": RICH, "tokens": "5"})), "invalid_amount"),
        (spend(json!({"user_id": RICH, "tokens": true})), "invalid_amount"),
        (
            spend(json!({"user_id": RICH, "tokens": 1_000_000_000_001_u64})),
            "invalid_amount",
        ),
        (
            raw("/v1/spend", "{\"user_id\": 101, \"tokens\": 18446744073709551616}"),
            "invalid_amount",
        ),
        (
            raw("/v1/spend", "{\"user_id\": 101, \"tokens\": 1e30}"),
            "invalid_amount",
        ),
        (
            raw("/v1/spend", "{\"user_id\": 101, \"tokens\": 1.0}").schema_blind(),
            "invalid_amount",
        ),
        (
            raw("/v1/spend", "{\"user_id\": 101, \"tokens\": 1e3}").schema_blind(),
            "invalid_amount",
        ),
        (
            spend(json!({"user_id": RICH, "tokens": 1, "description": "x".repeat(257)})).body_fault(),
            "invalid_field",
        ),
        (
            spend(json!({"user_id": RICH, "tokens": 1, "description": 42})).body_fault(),
            "invalid_field",
        ),
        (
            spend(json!({"user_id": RICH, "tokens": 1, "description": "bell\u{7}"})).body_fault(),
            "invalid_field",
        ),
        (
            spend(json!({"user_id": RICH, "tokens": 1, "description": "line\nbreak"})).body_fault(),
            "invalid_field",
        ),
        (
            spend(json!({"user_id": RICH, "tokens": 1, "metadata": "m1"})).body_fault(),
            "invalid_field",
        ),
        (
            spend(json!({"user_id": RICH, "tokens": 1, "metadata": [1]})).body_fault(),
            "invalid_field",
        ),
        (
            spend(json!({"user_id": RICH, "tokens": 1, "metadata": {"blob": "x".repeat(3000)}})).schema_blind(),
            "invalid_field",
        ),
        (
            spend(json!({"user_id": RICH, "tokens": 1})).without("idempotency-key"),
            "idempotency_key_missing",
        ),
        (
            spend(json!({"user_id": RICH, "tokens": 1})).header("idempotency-key", ""),
            "idempotency_key_invalid",
        ),
        (
            spend(json!({"user_id": RICH, "tokens": 1})).header("idempotency-key", "a b"),
            "idempotency_key_invalid",
        ),
        (
            spend(json!({"user_id": RICH, "tokens": 1})).header("idempotency-key", "é"),
            "idempotency_key_invalid",
        ),
        (
            spend(json!({"user_id": RICH, "tokens": 1})).header("idempotency-key", "k".repeat(129)),
            "idempotency_key_invalid",
        ),
        // holds
        (raw("/v1/holds", "{\"user_id\":"), "invalid_json"),
        (
            hold(json!({"user_id": RICH, "tokens": 1, "ttl_seconds": 60, "ttl": 60})),
            "unknown_field",
        ),
        (hold(json!({"user_id": RICH, "tokens": 1})), "missing_field"),
        (hold(json!({"user_id": RICH, "ttl_seconds": 60})), "missing_field"),
        (
            hold(json!({"user_id": RICH, "tokens": 0, "ttl_seconds": 60})),
            "invalid_amount",
        ),
        (
            hold(json!({"user_id": RICH, "tokens": 1, "ttl_seconds": 0})).body_fault(),
            "invalid_field",
        ),
        (
            hold(json!({"user_id": RICH, "tokens": 1, "ttl_seconds": 86_401})).body_fault(),
            "invalid_field",
        ),
        (
            hold(json!({"user_id": RICH, "tokens": 1, "ttl_seconds": 1.5})).body_fault(),
            "invalid_field",
        ),
        (
            hold(json!({"user_id": RICH, "tokens": 1, "ttl_seconds": "60"})).body_fault(),
            "invalid_field",
        ),
        (
            hold(json!({"user_id": RICH, "tokens": 1, "ttl_seconds": -60})).body_fault(),
            "invalid_field",
        ),
        (
            hold(json!({"user_id": "x", "tokens": 1, "ttl_seconds": 60})).body_fault(),
            "invalid_field",
        ),
        (
            hold(json!({"user_id": RICH, "tokens": 1, "ttl_seconds": 60})).without("idempotency-key"),
            "idempotency_key_missing",
        ),
        (
            hold(json!({"user_id": RICH, "tokens": 1, "ttl_seconds": 60})).header("idempotency-key", "tab\there"),
            "idempotency_key_invalid",
        ),
        // captures
        (raw(&capture_uri, "{]"), "invalid_json"),
        (capture(json!({"tokens": 1, "user_id": RICH})), "unknown_field"),
        (capture(json!({"tokens": 1, "metadata": {}})), "unknown_field"),
        (capture(json!({})), "missing_field"),
        (capture(json!({"tokens": 0})), "invalid_amount"),
        (capture(json!({"tokens": 2.5})), "invalid_amount"),
        (
            capture(json!({"tokens": 1, "description": "y".repeat(300)})).body_fault(),
            "invalid_field",
        ),
        (
            Call::post("/v1/holds/nope/capture", &fresh(), json!({"tokens": 1})),
            "invalid_field",
        ),
        (
            Call::post(format!("/v1/holds/{RICH}/capture"), &fresh(), json!({"tokens": 1})),
            "invalid_field",
        ),
        (
            capture(json!({"tokens": 1})).without("idempotency-key"),
            "idempotency_key_missing",
        ),
        (
            capture(json!({"tokens": 1})).header("idempotency-key", "x".repeat(200)),
            "idempotency_key_invalid",
        ),
        // releases
        (raw(&release_uri, "{"), "invalid_json"),
        (raw(&release_uri, "[]"), "invalid_json"),
        (
            Call::post(&release_uri, &fresh(), json!({"tokens": 1})),
            "unknown_field",
        ),
        (
            Call::post("/v1/holds/nope/release", &fresh(), json!({})),
            "invalid_field",
        ),
        (
            Call::post(
                format!("/v1/holds/{}/release", live_hold.to_uppercase()),
                &fresh(),
                json!({}),
            ),
            "invalid_field",
        ),
        (
            Call::post(&release_uri, &fresh(), json!({})).without("idempotency-key"),
            "idempotency_key_missing",
        ),
        (
            Call::post(&release_uri, &fresh(), json!({})).header("idempotency-key", " "),
            "idempotency_key_invalid",
        ),
        // refunds
        (raw("/v1/refunds", "{\"transaction_id\""), "invalid_json"),
        (
            refund(json!({"transaction_id": tx, "tokens": 1, "description": "why"})),
            "unknown_field",
        ),
        (refund(json!({"tokens": 1})), "missing_field"),
        (refund(json!({"transaction_id": tx})), "missing_field"),
        (
            refund(json!({"transaction_id": "abc", "tokens": 1})).body_fault(),
            "invalid_field",
        ),
        (
            refund(json!({"transaction_id": 42, "tokens": 1})).body_fault(),
            "invalid_field",
        ),
        (
            refund(json!({"transaction_id": tx.to_uppercase(), "tokens": 1})).body_fault(),
            "invalid_field",
        ),
        (refund(json!({"transaction_id": tx, "tokens": -3})), "invalid_amount"),
        (
            refund(json!({"transaction_id": tx, "tokens": 1, "reason": "z".repeat(257)})).body_fault(),
            "invalid_field",
        ),
        (
            refund(json!({"transaction_id": tx, "tokens": 1})).without("idempotency-key"),
            "idempotency_key_missing",
        ),
        (
            refund(json!({"transaction_id": tx, "tokens": 1})).header("idempotency-key", "ü"),
            "idempotency_key_invalid",
        ),
    ];
    assert!(cases.len() >= 30);
    for (call, code) in cases {
        let uri = call.uri.clone();
        let shown = String::from_utf8_lossy(&call.body)
            .chars()
            .take(120)
            .collect::<String>();
        let answer = c.send(call).await;
        assert_eq!(
            (answer.status.as_u16(), answer.code()),
            (400, code),
            "POST {uri} {shown}: {}",
            answer.body
        );
    }
}

/// DynamoDB failing under a spend: 503, and the retry with the same key
/// applies it once.
async fn mid_write_failure_is_retried_with_the_same_key(contract: &Contract) {
    let faults = DynamoFaults::default();
    let store = faulty_store(&faults).await;
    funded_user(&store, RICH, 100).await;
    let (secret, _) = service_key(&store, &[Scope::Spend, Scope::Read], 100).await;
    let api = SpendApi::new(store.clone(), config(100));
    let c = Caller {
        api: &api,
        contract,
        key: Some(&secret),
    };
    let call = Call::post("/v1/spend", "flaky-1", json!({"user_id": RICH, "tokens": 30}));
    // The key and the balance are read; every attempt of the transaction fails.
    faults.fail_after(2, 3);
    let answer = c.send(call.clone()).await;
    answer.refused(503, "unavailable");
    assert_eq!(answer.header("retry-after"), Some("1"));
    let mut answer = c.send(call.clone()).await;
    for _ in 0..5 {
        if answer.status != StatusCode::SERVICE_UNAVAILABLE {
            break;
        }
        answer = c.send(call.clone()).await;
    }
    let applied = answer.ok();
    assert_eq!(applied["balance_after"], 70);
    let again = c.send(call).await;
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.ok(), applied);
    assert_eq!(
        store.balance(user(RICH)).await.unwrap().0.available,
        tokens(70),
        "spent once"
    );
}

/// The checker itself: answers that break the spec are caught.
#[test]
fn the_checker_refuses_answers_the_spec_does_not_allow() {
    let contract = Contract::load();
    let answer = |status: u16, headers: &[(&str, &str)], body: Value| {
        let mut response = Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .header("cache-control", "no-store");
        for (name, value) in headers {
            response = response.header(*name, *value);
        }
        response.body(body.to_string()).unwrap()
    };
    let spend = |response: &Response<String>| contract.check(&Method::POST, "/v1/spend", response);
    let receipt = json!({
        "transaction_id": "101.01936b2a9c7e7c3a8f5e2d1c0b9a8f7e",
        "tokens": 5,
        "balance_after": null,
        "created_at": "2026-11-30T10:00:00.123456789Z",
    });
    assert_eq!(spend(&answer(200, &[], receipt.clone())), Ok(()));
    assert_eq!(
        spend(&answer(200, &[("idempotent-replayed", "true")], receipt.clone())),
        Ok(())
    );
    let mut extra = receipt.clone();
    extra["fee"] = json!(1);
    let mut missing = receipt.clone();
    missing.as_object_mut().unwrap().remove("balance_after");
    let mut negative = receipt.clone();
    negative["balance_after"] = json!(-1);
    let mut bad_id = receipt.clone();
    bad_id["transaction_id"] = json!("101.XYZ");
    let mut bad_time = receipt.clone();
    bad_time["created_at"] = json!("yesterday");
    let error = |code: &str| json!({"error": {"code": code, "message": "m"}});
    let refusals = [
        ("an undeclared field", answer(200, &[], extra)),
        ("a missing field", answer(200, &[], missing)),
        ("a negative balance", answer(200, &[], negative)),
        ("a malformed id", answer(200, &[], bad_id)),
        ("a malformed time", answer(200, &[], bad_time)),
        (
            "an undeclared header",
            answer(200, &[("x-debug", "1")], receipt.clone()),
        ),
        (
            "a bad replay header",
            answer(200, &[("idempotent-replayed", "yes")], receipt.clone()),
        ),
        ("an undeclared status", answer(418, &[], error("teapot"))),
        (
            "an undeclared status for the operation",
            answer(405, &[], error("method_not_allowed")),
        ),
        ("an unknown code", answer(400, &[], error("bad_request"))),
        ("a code of another status", answer(400, &[], error("forbidden"))),
        ("a code of another operation", answer(404, &[], error("hold_not_found"))),
        ("429 without Retry-After", answer(429, &[], error("rate_limited"))),
        (
            "a bad Retry-After",
            answer(429, &[("retry-after", "soon")], error("rate_limited")),
        ),
        (
            "402 without the balance",
            answer(402, &[], error("insufficient_tokens")),
        ),
        (
            "an extra error field",
            answer(
                403,
                &[],
                json!({"error": {"code": "forbidden", "message": "m", "scope": "spend"}}),
            ),
        ),
        (
            "an error without a message",
            answer(401, &[], json!({"error": {"code": "unauthorized"}})),
        ),
    ];
    for (what, response) in refusals {
        assert!(spend(&response).is_err(), "{what} should be refused");
    }
    let short = json!({"error": {"code": "insufficient_tokens", "message": "m", "available": 3, "requested": 5}});
    assert_eq!(spend(&answer(402, &[], short)), Ok(()));
    assert_eq!(
        spend(&answer(429, &[("retry-after", "1")], error("rate_limited"))),
        Ok(())
    );
    let mut plain = answer(200, &[], receipt);
    plain.headers_mut().remove("cache-control");
    assert!(spend(&plain).is_err(), "Cache-Control is required");
}

/// The spec agrees with itself, and with the handler's source: every route
/// the handler serves is an operation, every error code it can answer is
/// listed, and every extra error field is declared.
#[test]
fn the_spec_lists_every_route_and_code_of_the_handler() {
    let contract = Contract::load();

    // Each answer's codes belong to ErrorCode, and ErrorCode lists nothing
    // that no answer can carry.
    let mut answer_codes = BTreeSet::new();
    let mut responses: Vec<&Value> = Vec::new();
    for (path, method, operation) in contract.operations() {
        let scopes = &operation["security"][0]["serviceKey"];
        let expected = if method == "GET" {
            json!(["read"])
        } else {
            json!(["spend"])
        };
        assert_eq!(scopes, &expected, "{method} {path} names its scope");
        let idempotency = operation["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|p| contract.resolve(p)["name"] == "Idempotency-Key" && contract.resolve(p)["required"] == true);
        assert_eq!(
            idempotency,
            method == "POST",
            "{method} {path}: Idempotency-Key on writes only"
        );
        for (status, response) in operation["responses"].as_object().unwrap() {
            let response = contract.resolve(response);
            let retry_after = response.pointer("/headers/Retry-After").is_some();
            assert_eq!(
                retry_after,
                status == "429" || status == "503",
                "{method} {path} {status}: Retry-After"
            );
            responses.push(response);
        }
    }
    responses.extend(
        contract.doc[UNROUTED]["responses"]
            .as_object()
            .unwrap()
            .values()
            .map(|r| contract.resolve(r)),
    );
    for response in responses {
        let schema = &response["content"]["application/json"]["schema"];
        codes_in(&contract, schema, &mut answer_codes);
        // Every schema compiles.
        contract.validator(schema);
    }
    assert_eq!(
        answer_codes,
        contract.error_codes(),
        "ErrorCode == the codes answers declare"
    );

    // The handler's source.
    let source: String = HANDLER_SOURCES
        .iter()
        .map(|path| std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {path}: {e}")))
        .collect::<String>()
        .split_whitespace()
        .collect();
    let routes = routes_in(&source);
    assert!(routes.len() >= 7, "the route scanner found {routes:?}: update it");
    let spec_routes: BTreeSet<(String, String)> = contract
        .operations()
        .into_iter()
        .map(|(path, method, _)| (generic_path(&path), method))
        .collect();
    assert_eq!(
        routes, spec_routes,
        "the handler's routes (left) and the spec's operations (right)"
    );

    let mut codes = codes_in_source(&source);
    assert!(codes.len() >= 20, "the code scanner found {codes:?}: update it");
    // Named for a store "not found" where the store cannot answer one (the
    // key lookup, a read's rate window): never sent.
    codes.remove("not_found");
    let unlisted: Vec<_> = codes.difference(&contract.error_codes()).cloned().collect();
    assert!(
        unlisted.is_empty(),
        "error codes in the handler missing from the spec: {unlisted:?}"
    );

    let mut declared_fields = BTreeSet::new();
    for schema in contract.doc["components"]["schemas"].as_object().unwrap().values() {
        collect_error_fields(&contract, schema, &mut declared_fields);
    }
    let fields = detail_fields_in(&source);
    assert!(!fields.is_empty(), "the detail scanner found nothing: update it");
    let undeclared: Vec<_> = fields.difference(&declared_fields).cloned().collect();
    assert!(
        undeclared.is_empty(),
        "extra error fields the spec does not declare: {undeclared:?}"
    );
}

/// `/v1/users/{user_id}/balance` -> `/v1/users/{}/balance`.
fn generic_path(path: &str) -> String {
    path.split('/')
        .map(|part| if part.starts_with('{') { "{}" } else { part })
        .collect::<Vec<_>>()
        .join("/")
}

/// `["v1","holds",hold,"capture"]=>(Route::Capture(hold),Method::POST)` in
/// whitespace-free source.
fn routes_in(source: &str) -> BTreeSet<(String, String)> {
    let mut routes = BTreeSet::new();
    for (at, _) in source.match_indices("]=>(Route::") {
        let Some(open) = source[..at].rfind('[') else { continue };
        let path: Vec<String> = source[open + 1..at]
            .split(',')
            .map(|part| match part.strip_prefix('"').and_then(|p| p.strip_suffix('"')) {
                Some(literal) => literal.to_owned(),
                None => "{}".to_owned(),
            })
            .collect();
        let rest = &source[at..];
        let Some(method) = rest
            .find("Method::")
            .map(|m| &rest[m + 8..])
            .map(|m| m.chars().take_while(char::is_ascii_uppercase).collect::<String>())
        else {
            continue;
        };
        routes.insert((format!("/{}", path.join("/")), method));
    }
    routes
}

/// String literals passed as error codes, in whitespace-free source.
fn codes_in_source(source: &str) -> BTreeSet<String> {
    let mut codes = BTreeSet::new();
    for marker in [
        "bad_request(",
        "not_found(",
        "conflict(",
        "not_found_as(",
        "from_store(",
        "code:",
        "StatusCode::",
    ] {
        for (at, _) in source.match_indices(marker) {
            let mut rest = &source[at + marker.len()..];
            // An argument before the code: `from_store(e,"x")`, `StatusCode::CONFLICT,"x"`.
            let ident: usize = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .map(char::len_utf8)
                .sum();
            if ident > 0 && rest[ident..].starts_with(',') {
                rest = &rest[ident + 1..];
            }
            let Some(literal) = rest.strip_prefix('"') else {
                continue;
            };
            let Some(end) = literal.find('"') else { continue };
            let code = &literal[..end];
            let snake = !code.is_empty()
                && code.starts_with(|c: char| c.is_ascii_lowercase())
                && code.chars().all(|c| c.is_ascii_lowercase() || c == '_');
            if snake {
                codes.insert(code.to_owned());
            }
        }
    }
    codes
}

/// Field names of `with_details(json!({"name": ...}))`.
fn detail_fields_in(source: &str) -> BTreeSet<String> {
    let mut fields = BTreeSet::new();
    for (at, marker) in source.match_indices("with_details(json!({") {
        let rest = &source[at + marker.len()..];
        let end = rest.find("}))").unwrap_or(rest.len());
        for part in rest[..end].split(',') {
            if let Some(name) = part.strip_prefix('"').and_then(|p| p.split('"').next()) {
                fields.insert(name.to_owned());
            }
        }
    }
    fields
}

/// Fields an error object may carry besides `code` and `message`.
fn collect_error_fields(contract: &Contract, schema: &Value, found: &mut BTreeSet<String>) {
    let schema = contract.resolve(schema);
    if let Some(error) = schema.pointer("/properties/error") {
        let error = contract.resolve(error);
        let variants: Vec<&Value> = match error.get("oneOf").and_then(Value::as_array) {
            Some(variants) => variants.iter().collect(),
            None => vec![error],
        };
        for variant in variants {
            for name in contract.resolve(variant)["properties"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, _)| k)
            {
                if name != "code" && name != "message" {
                    found.insert(name.clone());
                }
            }
        }
    }
}
