//! The spend API end to end: the real handler, in-process, on DynamoDB Local.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures::future::join_all;
use http::{Method, Request, StatusCode};
use serde_json::{Value, json};
use spend_api::{SpendApi, SpendConfig};
use tokenbill::domain::ledger::CreditKind;
use tokenbill::domain::service_key::{RatePerSecond, Scope};
use tokenbill::store::BalanceRequest;
use tokenbill::{ManualClock, Store};
use tokenbill_tests::faults::{DynamoFaults, faulty_store};
use tokenbill_tests::{fresh_store, funded_user, key, service_key, tokens, user};

fn config(user_rate: u32) -> SpendConfig {
    SpendConfig {
        user_rate: RatePerSecond::new(user_rate).unwrap(),
        key_cache_ttl: Duration::from_secs(30),
        low_balance_threshold: None,
    }
}

struct Answer {
    status: StatusCode,
    headers: http::HeaderMap,
    body: Value,
}

impl Answer {
    fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
}

struct Client<'a> {
    api: &'a SpendApi,
    key: String,
}

impl Client<'_> {
    async fn send(&self, method: Method, path: &str, idempotency: Option<&str>, body: &str) -> Answer {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", format!("Bearer {}", self.key))
            .header("content-type", "application/json");
        if let Some(idempotency) = idempotency {
            request = request.header("idempotency-key", idempotency);
        }
        let response = self.api.handle(request.body(body.as_bytes().to_vec()).unwrap()).await;
        let (parts, body) = response.into_parts();
        Answer {
            status: parts.status,
            headers: parts.headers,
            body: serde_json::from_str(&body).unwrap_or(Value::String(body)),
        }
    }

    async fn post(&self, path: &str, idempotency: &str, body: Value) -> Answer {
        self.send(Method::POST, path, Some(idempotency), &body.to_string())
            .await
    }

    async fn get(&self, path: &str) -> Answer {
        self.send(Method::GET, path, None, "").await
    }

    async fn balance(&self, id: i64) -> (u64, u64) {
        let answer = self.get(&format!("/v1/users/{id}/balance")).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        (
            answer.body["available"].as_u64().unwrap(),
            answer.body["held"].as_u64().unwrap(),
        )
    }
}

/// Available and held tokens as stored.
async fn buckets(store: &Store, id: i64) -> (u64, u64) {
    let (balance, _) = store.balance(user(id)).await.unwrap();
    (balance.available.get(), balance.held.get())
}

async fn assert_audit_ok(store: &Store, id: i64) {
    let report = store.audit(user(id)).await.unwrap();
    assert!(report.is_ok(), "audit: {:?}", report.problems);
}

#[tokio::test]
async fn spend_answers_with_the_balance_after_and_replays_the_same_answer() {
    let store = fresh_store().await;
    funded_user(&store, 7, 100).await;
    let api = SpendApi::new(store.clone(), config(50));
    let client = Client {
        api: &api,
        key: service_key(&store, &[Scope::Spend, Scope::Read], 100).await.0,
    };

    let first = client
        .post(
            "/v1/spend",
            "req-1",
            json!({"user_id": 7, "tokens": 30, "description": "chat completion", "metadata": {"model": "m1"}}),
        )
        .await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    assert_eq!(first.body["balance_after"], 70);
    assert_eq!(first.body["tokens"], 30);
    assert!(first.headers.get("idempotent-replayed").is_none());

    for _ in 0..3 {
        let again = client
            .post(
                "/v1/spend",
                "req-1",
                json!({"user_id": 7, "tokens": 30, "description": "chat completion", "metadata": {"model": "m1"}}),
            )
            .await;
        assert_eq!(again.status, StatusCode::OK);
        assert_eq!(again.body, first.body, "a replay answers exactly as the first time");
        assert_eq!(again.headers["idempotent-replayed"], "true");
    }
    let concurrent = join_all((0..20).map(|_| {
        client.post(
            "/v1/spend",
            "req-1",
            json!({"user_id": 7, "tokens": 30, "description": "chat completion", "metadata": {"model": "m1"}}),
        )
    }))
    .await;
    assert!(
        concurrent
            .iter()
            .all(|a| a.status == StatusCode::OK && a.body == first.body)
    );

    // The same key with another body is refused and changes nothing.
    for other in [
        json!({"user_id": 7, "tokens": 31, "description": "chat completion", "metadata": {"model": "m1"}}),
        json!({"user_id": 7, "tokens": 30, "description": "another text", "metadata": {"model": "m1"}}),
        json!({"user_id": 7, "tokens": 30}),
    ] {
        let reused = client.post("/v1/spend", "req-1", other).await;
        assert_eq!(reused.status, StatusCode::CONFLICT, "{}", reused.body);
        assert_eq!(reused.code(), "idempotency_key_reused");
    }
    assert_eq!(client.balance(7).await, (70, 0), "one effect only");

    // The ledger shows the spend with its description and metadata.
    let page = client.get("/v1/users/7/transactions").await;
    assert_eq!(page.status, StatusCode::OK);
    let newest = &page.body["transactions"][0];
    assert_eq!(newest["transaction_id"], first.body["transaction_id"]);
    assert_eq!(newest["kind"], "spend");
    assert_eq!(newest["metadata"]["model"], "m1");
    assert_eq!(newest["description"], "chat completion");

    // Not enough: 402 with what is available, nothing taken.
    let short = client
        .post("/v1/spend", "req-2", json!({"user_id": 7, "tokens": 71}))
        .await;
    assert_eq!(short.status, StatusCode::PAYMENT_REQUIRED);
    assert_eq!(short.code(), "insufficient_tokens");
    assert_eq!(short.body["error"]["available"], 70);
    assert_audit_ok(&store, 7).await;
}

#[tokio::test]
async fn five_hundred_concurrent_spends_on_one_user_never_overdraw() {
    let store = fresh_store().await;
    let start = 3_000;
    funded_user(&store, 11, start).await;
    let secret = service_key(&store, &[Scope::Spend, Scope::Read], 8_000).await.0;
    // Several warm instances, as Lambda would run them.
    let apis: Vec<SpendApi> = (0..8).map(|_| SpendApi::new(store.clone(), config(8_000))).collect();
    let amounts: Vec<u64> = (0..500u64).map(|i| 1 + (i * 7919) % 20).collect();
    let answers = join_all(amounts.iter().enumerate().map(|(i, &amount)| {
        let client = Client {
            api: &apis[i % apis.len()],
            key: secret.clone(),
        };
        async move {
            let answer = client
                .post(
                    "/v1/spend",
                    &format!("spend-{i}"),
                    json!({"user_id": 11, "tokens": amount}),
                )
                .await;
            (amount, answer)
        }
    }))
    .await;
    let mut spent = 0;
    let mut refused = 0;
    for (amount, answer) in &answers {
        match answer.status {
            StatusCode::OK => spent += amount,
            StatusCode::PAYMENT_REQUIRED => refused += 1,
            other => panic!("unexpected {other}: {}", answer.body),
        }
        if let Some(after) = answer.body["balance_after"].as_u64() {
            assert!(after <= start, "a balance after is a real balance");
        }
    }
    assert!(
        refused > 0,
        "the sum asked for exceeds the balance, so some are refused"
    );
    let client = Client {
        api: &apis[0],
        key: secret,
    };
    let (available, held) = client.balance(11).await;
    assert_eq!(available, start - spent, "the balance is the start less what succeeded");
    assert_eq!(held, 0);
    assert!(spent <= start);
    assert_audit_ok(&store, 11).await;
}

#[tokio::test]
async fn a_warm_spend_is_one_dynamodb_request() {
    let faults = DynamoFaults::default();
    let store = faulty_store(&faults).await;
    funded_user(&store, 5, 1_000).await;
    let api = SpendApi::new(store.clone(), config(50));
    let client = Client {
        api: &api,
        key: service_key(&store, &[Scope::Spend], 100).await.0,
    };
    // The first call on a cold instance looks up the key and the balance.
    let before = faults.requests();
    let first = client
        .post("/v1/spend", "warm-0", json!({"user_id": 5, "tokens": 1}))
        .await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(
        faults.requests() - before,
        3,
        "key lookup, balance read, the transaction"
    );
    for i in 1..=20 {
        let before = faults.requests();
        let answer = client
            .post("/v1/spend", &format!("warm-{i}"), json!({"user_id": 5, "tokens": 1}))
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        assert_eq!(answer.body["balance_after"], 1_000 - i - 1);
        assert_eq!(faults.requests() - before, 1, "spend {i}: exactly one DynamoDB request");
    }
    // Another writer moved the balance: one failed pinned write, then the answer is exact again.
    store
        .apply(BalanceRequest::credit(
            user(5),
            CreditKind::Grant,
            tokens(100),
            key("elsewhere"),
        ))
        .await
        .unwrap();
    let before = faults.requests();
    let answer = client
        .post("/v1/spend", "after-grant", json!({"user_id": 5, "tokens": 10}))
        .await;
    assert_eq!(answer.body["balance_after"], 1_000 - 21 + 100 - 10);
    assert_eq!(faults.requests() - before, 2);
    assert_audit_ok(&store, 5).await;
}

#[tokio::test]
async fn holds_capture_release_and_expire_on_their_own() {
    let clock = ManualClock::new(Utc::now());
    let store = fresh_store().await.with_clock(Arc::new(clock.clone()));
    funded_user(&store, 21, 1_000).await;
    let api = SpendApi::new(store.clone(), config(50));
    let client = Client {
        api: &api,
        key: service_key(&store, &[Scope::Spend, Scope::Read], 100).await.0,
    };

    // Capture takes part and gives back the rest.
    let hold = client
        .post(
            "/v1/holds",
            "h1",
            json!({"user_id": 21, "tokens": 300, "ttl_seconds": 60}),
        )
        .await;
    assert_eq!(hold.status, StatusCode::OK, "{}", hold.body);
    assert_eq!(hold.body["balance_after"], 700);
    assert_eq!(client.balance(21).await, (700, 300));
    let hold_id = hold.body["hold_id"].as_str().unwrap().to_owned();
    let too_much = client
        .post(&format!("/v1/holds/{hold_id}/capture"), "c0", json!({"tokens": 301}))
        .await;
    assert_eq!(
        (too_much.status, too_much.code()),
        (StatusCode::CONFLICT, "capture_exceeds_hold")
    );
    let captured = client
        .post(&format!("/v1/holds/{hold_id}/capture"), "c1", json!({"tokens": 120}))
        .await;
    assert_eq!(captured.status, StatusCode::OK, "{}", captured.body);
    assert_eq!(captured.body["captured"], 120);
    assert_eq!(captured.body["balance_after"], 880);
    assert_eq!(client.balance(21).await, (880, 0));
    let twice = client
        .post(&format!("/v1/holds/{hold_id}/capture"), "c2", json!({"tokens": 10}))
        .await;
    assert_eq!((twice.status, twice.code()), (StatusCode::CONFLICT, "hold_not_active"));

    // Release gives all of it back.
    let hold = client
        .post(
            "/v1/holds",
            "h2",
            json!({"user_id": 21, "tokens": 80, "ttl_seconds": 60}),
        )
        .await;
    let hold_id = hold.body["hold_id"].as_str().unwrap().to_owned();
    let released = client
        .post(&format!("/v1/holds/{hold_id}/release"), "r1", json!({}))
        .await;
    assert_eq!(released.status, StatusCode::OK, "{}", released.body);
    assert_eq!(released.body["released"], 80);
    assert_eq!(client.balance(21).await, (880, 0));

    // A hold nobody settles gives its tokens back when its time is up:
    // at the next balance read...
    client
        .post(
            "/v1/holds",
            "h3",
            json!({"user_id": 21, "tokens": 500, "ttl_seconds": 30}),
        )
        .await;
    assert_eq!(client.balance(21).await, (380, 500));
    clock.advance(chrono::Duration::seconds(31));
    assert_eq!(client.balance(21).await, (880, 0));

    // ...at a capture, which is refused...
    let late = client
        .post(
            "/v1/holds",
            "h4",
            json!({"user_id": 21, "tokens": 200, "ttl_seconds": 30}),
        )
        .await;
    let late_id = late.body["hold_id"].as_str().unwrap().to_owned();
    clock.advance(chrono::Duration::seconds(31));
    let refused = client
        .post(&format!("/v1/holds/{late_id}/capture"), "c3", json!({"tokens": 50}))
        .await;
    assert_eq!((refused.status, refused.code()), (StatusCode::CONFLICT, "hold_expired"));
    assert_eq!(
        buckets(&store, 21).await,
        (880, 0),
        "the expired hold was given back at the capture"
    );

    // ...at a spend that would otherwise come up short...
    client
        .post(
            "/v1/holds",
            "h5",
            json!({"user_id": 21, "tokens": 800, "ttl_seconds": 30}),
        )
        .await;
    clock.advance(chrono::Duration::seconds(31));
    let spend = client
        .post("/v1/spend", "s1", json!({"user_id": 21, "tokens": 500}))
        .await;
    assert_eq!(spend.status, StatusCode::OK, "{}", spend.body);
    assert_eq!(spend.body["balance_after"], 380);

    // ...and by the sweep, for holds nobody touches.
    client
        .post(
            "/v1/holds",
            "h6",
            json!({"user_id": 21, "tokens": 100, "ttl_seconds": 30}),
        )
        .await;
    clock.advance(chrono::Duration::seconds(31));
    assert_eq!(store.expired_holds(100).await.unwrap().len(), 1);
    let released = tokenbill::sweep::release_expired_holds(&store).await.unwrap();
    assert_eq!(released, 1);
    assert!(
        store.expired_holds(100).await.unwrap().is_empty(),
        "a closed hold leaves the due index"
    );
    assert_eq!(buckets(&store, 21).await, (380, 0));
    assert_audit_ok(&store, 21).await;
}

#[tokio::test]
async fn refunds_never_exceed_what_was_spent() {
    let store = fresh_store().await;
    funded_user(&store, 31, 100).await;
    let api = SpendApi::new(store.clone(), config(50));
    let client = Client {
        api: &api,
        key: service_key(&store, &[Scope::Spend, Scope::Read], 100).await.0,
    };
    let spend = client
        .post("/v1/spend", "s", json!({"user_id": 31, "tokens": 40}))
        .await;
    let tx = spend.body["transaction_id"].as_str().unwrap().to_owned();

    let part = client
        .post(
            "/v1/refunds",
            "r1",
            json!({"transaction_id": tx, "tokens": 25, "reason": "model error"}),
        )
        .await;
    assert_eq!(part.status, StatusCode::OK, "{}", part.body);
    assert_eq!(part.body["refunded"], 25);
    assert_eq!(part.body["balance_after"], 85);
    let over = client
        .post("/v1/refunds", "r2", json!({"transaction_id": tx, "tokens": 16}))
        .await;
    assert_eq!(
        (over.status, over.code()),
        (StatusCode::CONFLICT, "refund_exceeds_remaining")
    );
    assert_eq!(over.body["error"]["refundable"], 15);
    // Concurrent refunds of the rest: exactly 15 more come back.
    let racing = join_all((0..10).map(|i| {
        let (client, tx) = (&client, &tx);
        async move {
            client
                .post(
                    "/v1/refunds",
                    &format!("race-{i}"),
                    json!({"transaction_id": tx, "tokens": 5}),
                )
                .await
        }
    }))
    .await;
    assert_eq!(racing.iter().filter(|a| a.status == StatusCode::OK).count(), 3);
    assert_eq!(client.balance(31).await, (100, 0));

    // A refund is not itself refundable; unknown transactions are 404.
    let refund_id = part.body["transaction_id"].as_str().unwrap().to_owned();
    let again = client
        .post("/v1/refunds", "r3", json!({"transaction_id": refund_id, "tokens": 1}))
        .await;
    assert_eq!((again.status, again.code()), (StatusCode::CONFLICT, "not_refundable"));
    let unknown = client
        .post(
            "/v1/refunds",
            "r4",
            json!({"transaction_id": format!("31.{}", "0".repeat(32)), "tokens": 1}),
        )
        .await;
    assert_eq!(
        (unknown.status, unknown.code()),
        (StatusCode::NOT_FOUND, "transaction_not_found")
    );

    // Another service cannot refund this service's spends.
    let stranger = Client {
        api: &api,
        key: service_key(&store, &[Scope::Spend, Scope::Read], 100).await.0,
    };
    let spend = client
        .post("/v1/spend", "s2", json!({"user_id": 31, "tokens": 10}))
        .await;
    let foreign = stranger
        .post(
            "/v1/refunds",
            "f1",
            json!({"transaction_id": spend.body["transaction_id"], "tokens": 1}),
        )
        .await;
    assert_eq!(
        (foreign.status, foreign.code()),
        (StatusCode::NOT_FOUND, "transaction_not_found")
    );
    assert_eq!(client.balance(31).await, (90, 0));
    // Nor settle its holds.
    let hold = client
        .post("/v1/holds", "h", json!({"user_id": 31, "tokens": 5, "ttl_seconds": 60}))
        .await;
    let hold_id = hold.body["hold_id"].as_str().unwrap().to_owned();
    for (action, body) in [("capture", json!({"tokens": 1})), ("release", json!({}))] {
        let foreign = stranger
            .post(&format!("/v1/holds/{hold_id}/{action}"), action, body)
            .await;
        assert_eq!(
            (foreign.status, foreign.code()),
            (StatusCode::NOT_FOUND, "hold_not_found"),
            "{action}"
        );
    }
    assert_eq!(client.balance(31).await, (85, 5));
    assert_audit_ok(&store, 31).await;
}

#[tokio::test]
async fn keys_scopes_and_rate_limits_are_enforced() {
    let clock = ManualClock::new(Utc::now());
    let store = fresh_store().await.with_clock(Arc::new(clock.clone()));
    funded_user(&store, 41, 1_000).await;
    funded_user(&store, 42, 1_000).await;
    let api = SpendApi::new(
        store.clone(),
        SpendConfig {
            key_cache_ttl: Duration::ZERO,
            ..config(3)
        },
    );
    let reader = Client {
        api: &api,
        key: service_key(&store, &[Scope::Read], 100).await.0,
    };
    let forbidden = reader.post("/v1/spend", "x", json!({"user_id": 41, "tokens": 1})).await;
    assert_eq!(
        (forbidden.status, forbidden.code()),
        (StatusCode::FORBIDDEN, "forbidden")
    );
    let spender = Client {
        api: &api,
        key: service_key(&store, &[Scope::Spend], 100).await.0,
    };
    let cannot_read = spender.get("/v1/users/41/balance").await;
    assert_eq!(cannot_read.status, StatusCode::FORBIDDEN);

    // Per user: 3 writes a second, whatever the key.
    for i in 0..3 {
        let ok = spender
            .post("/v1/spend", &format!("u{i}"), json!({"user_id": 41, "tokens": 1}))
            .await;
        assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
    }
    let limited = spender
        .post("/v1/spend", "u3", json!({"user_id": 41, "tokens": 1}))
        .await;
    assert_eq!(
        (limited.status, limited.code()),
        (StatusCode::TOO_MANY_REQUESTS, "rate_limited")
    );
    assert_eq!(limited.headers["retry-after"], "1");
    let other_user = spender
        .post("/v1/spend", "v0", json!({"user_id": 42, "tokens": 1}))
        .await;
    assert_eq!(other_user.status, StatusCode::OK, "another user has their own window");
    clock.advance(chrono::Duration::seconds(1));
    let next_window = spender
        .post("/v1/spend", "u3", json!({"user_id": 41, "tokens": 1}))
        .await;
    assert_eq!(
        next_window.status,
        StatusCode::OK,
        "the same request succeeds in the next second"
    );

    // Per key: a key of 2/s is refused its third request in a second.
    let slow = Client {
        api: &api,
        key: service_key(&store, &[Scope::Spend, Scope::Read], 2).await.0,
    };
    clock.advance(chrono::Duration::seconds(1));
    assert_eq!(slow.get("/v1/users/41/balance").await.status, StatusCode::OK);
    assert_eq!(
        slow.post("/v1/spend", "k1", json!({"user_id": 42, "tokens": 1}))
            .await
            .status,
        StatusCode::OK
    );
    let over = slow.post("/v1/spend", "k2", json!({"user_id": 41, "tokens": 1})).await;
    assert_eq!(
        (over.status, over.code()),
        (StatusCode::TOO_MANY_REQUESTS, "rate_limited")
    );
    assert!(over.headers.contains_key("retry-after"));

    // Revoked: refused at once when the instance does not cache keys.
    let (secret, record) = service_key(&store, &[Scope::Spend], 10).await;
    let doomed = Client { api: &api, key: secret };
    clock.advance(chrono::Duration::seconds(1));
    assert_eq!(
        doomed
            .post("/v1/spend", "d1", json!({"user_id": 42, "tokens": 1}))
            .await
            .status,
        StatusCode::OK
    );
    store.revoke_service_key(&record.id).await.unwrap();
    let revoked = doomed
        .post("/v1/spend", "d2", json!({"user_id": 42, "tokens": 1}))
        .await;
    assert_eq!(
        (revoked.status, revoked.code()),
        (StatusCode::UNAUTHORIZED, "unauthorized")
    );

    // Unknown and malformed keys.
    for bad in ["", "tbk_nope", &format!("tbk_{}_{}", "a".repeat(12), "b".repeat(64))] {
        let stranger = Client {
            api: &api,
            key: bad.to_owned(),
        };
        let answer = stranger.get("/v1/users/41/balance").await;
        assert_eq!(
            (answer.status, answer.code()),
            (StatusCode::UNAUTHORIZED, "unauthorized")
        );
    }
    assert_audit_ok(&store, 41).await;
    assert_audit_ok(&store, 42).await;
}

/// Method, path, `Idempotency-Key`, body, expected status and error code.
type MalformedCase<'a> = (Method, &'a str, Option<&'a str>, String, u16, &'a str);

#[tokio::test]
async fn every_malformed_request_gets_its_own_4xx_code() {
    let store = fresh_store().await;
    funded_user(&store, 51, 100).await;
    let api = SpendApi::new(store.clone(), config(1_000));
    let client = Client {
        api: &api,
        key: service_key(&store, &[Scope::Spend, Scope::Read], 1_000).await.0,
    };
    let hold = client
        .post(
            "/v1/holds",
            "setup",
            json!({"user_id": 51, "tokens": 10, "ttl_seconds": 60}),
        )
        .await;
    let hold_id = hold.body["hold_id"].as_str().unwrap().to_owned();
    let capture = format!("/v1/holds/{hold_id}/capture");
    let big = "x".repeat(17 * 1024);
    let long_text = "é".repeat(257);
    let big_metadata = json!({"user_id": 51, "tokens": 1, "metadata": {"blob": "y".repeat(2100)}}).to_string();
    let no_key: Option<&str> = None;
    let long_key = "k".repeat(129);
    let missing_hold = format!("/v1/holds/51.{}/release", "0".repeat(32));
    let cases: Vec<MalformedCase> = vec![
        (Method::POST, "/v1/spend", Some("a"), "{".into(), 400, "invalid_json"),
        (Method::POST, "/v1/spend", Some("a"), "[]".into(), 400, "invalid_json"),
        (
            Method::POST,
            "/v1/spend",
            Some("a"),
            "\"spend\"".into(),
            400,
            "invalid_json",
        ),
        (
            Method::POST,
            "/v1/spend",
            Some("a"),
            "{\"user_id\":51,\"tokens\":1,}".into(),
            400,
            "invalid_json",
        ),
        (
            Method::POST,
            "/v1/spend",
            Some("a"),
            r#"{"user_id":51,"tokens":1,"price":5}"#.into(),
            400,
            "unknown_field",
        ),
        (
            Method::POST,
            "/v1/spend",
            Some("a"),
            r#"{"user_id":51}"#.into(),
            400,
            "missing_field",
        ),
        (
            Method::POST,
            "/v1/spend",
            Some("a"),
            r#"{"tokens":1}"#.into(),
            400,
            "missing_field",
        ),
        (
            Method::POST,
            "/v1/spend",
            Some("a"),
            r#"{"user_id":51,"tokens":null}"#.into(),
            400,
            "missing_field",
        ),
        (
            Method::POST,
            "/v1/spend",
            Some("a"),
            r#"{"user_id":51,"tokens":0}"#.into(),
            400,
            "invalid_amount",
        ),
        (
            Method::POST,
            "/v1/spend",
            Some("a"),
            r#"{"user_id":51,"tokens":-5}"#.into(),
            400,
            "invalid_amount",
        ),
        (
            Method::POST,
            "/v1/spend",
            Some("a"),
            r#"{"user_id":51,"tokens":1.5}"#.into(),
            400,
            "invalid_amount",
        ),
        (
            Method::POST,
            "/v1/spend",
            Some("a"),
            r#"{"user_id":51,"tokens":1e3}"#.into(),
            400,
            "invalid_amount",
        ),
        (
            Method::POST,
            "/v1/spend",
            Some("a"),
            r#"{"user_id":51,"tokens":"10"}"#.into(),
            400,
            "invalid_amount",
        ),
        (
            Method::POST,
            "/v1/spend",
            Some("a"),
            r#"{"user_id":51,"tokens":1000000000001}"#.into(),
            400,
            "invalid_amount",
        ),
        (
            Method::POST,
            "/v1/spend",
            Some("a"),
            r#"{"user_id":51,"tokens":99999999999999999999999999}"#.into(),
            400,
            "invalid_amount",
        ),
        (
            Method::POST,
            "/v1/spend",
            Some("a"),
            r#"{"user_id":0,"tokens":1}"#.into(),
            400,
            "invalid_field",
        ),
        (
            Method::POST,
            "/v1/spend",
            Some("a"),
            r#"{"user_id":-3,"tokens":1}"#.into(),
            400,
            "invalid_field",
        ),
        (
            Method::POST,
            "/v1/spend",
            Some("a"),
            r#"{"user_id":"51","tokens":1}"#.into(),
            400,
            "invalid_field",
        ),
        (
            Method::POST,
            "/v1/spend",
            Some("a"),
            r#"{"user_id":4503599627370496,"tokens":1}"#.into(),
            400,
            "invalid_field",
        ),
        (
            Method::POST,
            "/v1/spend",
            Some("a"),
            r#"{"user_id":51,"tokens":1,"description":7}"#.into(),
            400,
            "invalid_field",
        ),
        (
            Method::POST,
            "/v1/spend",
            Some("a"),
            format!(r#"{{"user_id":51,"tokens":1,"description":"{long_text}"}}"#),
            400,
            "invalid_field",
        ),
        (
            Method::POST,
            "/v1/spend",
            Some("a"),
            r#"{"user_id":51,"tokens":1,"description":"bell\u0007"}"#.into(),
            400,
            "invalid_field",
        ),
        (
            Method::POST,
            "/v1/spend",
            Some("a"),
            r#"{"user_id":51,"tokens":1,"metadata":[1]}"#.into(),
            400,
            "invalid_field",
        ),
        (Method::POST, "/v1/spend", Some("a"), big_metadata, 400, "invalid_field"),
        (Method::POST, "/v1/spend", Some("a"), big.clone(), 413, "body_too_large"),
        (
            Method::POST,
            "/v1/spend",
            None,
            r#"{"user_id":51,"tokens":1}"#.into(),
            400,
            "idempotency_key_missing",
        ),
        (
            Method::POST,
            "/v1/spend",
            Some("has space"),
            r#"{"user_id":51,"tokens":1}"#.into(),
            400,
            "idempotency_key_invalid",
        ),
        (
            Method::POST,
            "/v1/spend",
            Some(long_key.as_str()),
            r#"{"user_id":51,"tokens":1}"#.into(),
            400,
            "idempotency_key_invalid",
        ),
        (
            Method::POST,
            "/v1/spend",
            Some("a"),
            r#"{"user_id":999,"tokens":1}"#.into(),
            404,
            "user_not_found",
        ),
        (
            Method::POST,
            "/v1/holds",
            Some("a"),
            r#"{"user_id":51,"tokens":1}"#.into(),
            400,
            "missing_field",
        ),
        (
            Method::POST,
            "/v1/holds",
            Some("a"),
            r#"{"user_id":51,"tokens":1,"ttl_seconds":0}"#.into(),
            400,
            "invalid_field",
        ),
        (
            Method::POST,
            "/v1/holds",
            Some("a"),
            r#"{"user_id":51,"tokens":1,"ttl_seconds":86401}"#.into(),
            400,
            "invalid_field",
        ),
        (
            Method::POST,
            "/v1/holds",
            Some("a"),
            r#"{"user_id":51,"tokens":1,"ttl_seconds":2.5}"#.into(),
            400,
            "invalid_field",
        ),
        (
            Method::POST,
            &capture,
            Some("a"),
            r#"{"tokens":1,"user_id":51}"#.into(),
            400,
            "unknown_field",
        ),
        (Method::POST, &capture, Some("a"), r#"{}"#.into(), 400, "missing_field"),
        (
            Method::POST,
            "/v1/holds/nonsense/capture",
            Some("a"),
            r#"{"tokens":1}"#.into(),
            400,
            "invalid_field",
        ),
        (Method::POST, &missing_hold, Some("a"), "".into(), 404, "hold_not_found"),
        (
            Method::POST,
            "/v1/refunds",
            Some("a"),
            r#"{"transaction_id":"abc","tokens":1}"#.into(),
            400,
            "invalid_field",
        ),
        (
            Method::POST,
            "/v1/refunds",
            Some("a"),
            r#"{"transaction_id":5,"tokens":1}"#.into(),
            400,
            "invalid_field",
        ),
        (
            Method::GET,
            "/v1/users/abc/balance",
            no_key,
            "".into(),
            400,
            "invalid_field",
        ),
        (
            Method::GET,
            "/v1/users/999/balance",
            no_key,
            "".into(),
            404,
            "user_not_found",
        ),
        (
            Method::GET,
            "/v1/users/51/transactions?limit=0",
            no_key,
            "".into(),
            400,
            "invalid_field",
        ),
        (
            Method::GET,
            "/v1/users/51/transactions?limit=101",
            no_key,
            "".into(),
            400,
            "invalid_field",
        ),
        (
            Method::GET,
            "/v1/users/51/transactions?cursor=zzz",
            no_key,
            "".into(),
            400,
            "invalid_field",
        ),
        (
            Method::GET,
            "/v1/users/51/transactions?page=2",
            no_key,
            "".into(),
            400,
            "unknown_field",
        ),
        (Method::GET, "/v1/spend", no_key, "".into(), 405, "method_not_allowed"),
        (
            Method::DELETE,
            "/v1/holds",
            no_key,
            "".into(),
            405,
            "method_not_allowed",
        ),
        (Method::GET, "/v2/spend", no_key, "".into(), 404, "no_route"),
        (
            Method::POST,
            "/v1/users/51/balance",
            Some("a"),
            "{}".into(),
            405,
            "method_not_allowed",
        ),
    ];
    assert!(cases.len() >= 30);
    for (method, path, idempotency, body, status, code) in &cases {
        let answer = client.send(method.clone(), path, *idempotency, body).await;
        assert_eq!(
            (answer.status.as_u16(), answer.code()),
            (*status, *code),
            "{method} {path} {}: {}",
            &body[..body.len().min(80)],
            answer.body
        );
        assert!(answer.body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
    }

    // A body that is not JSON by content type.
    let request = Request::builder()
        .method(Method::POST)
        .uri("/v1/spend")
        .header("authorization", format!("Bearer {}", client.key))
        .header("idempotency-key", "form")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(b"user_id=51&tokens=1".to_vec())
        .unwrap();
    let response = api.handle(request).await;
    assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);

    // None of it moved a token.
    assert_eq!(client.balance(51).await, (90, 10));
    assert_audit_ok(&store, 51).await;
}

#[tokio::test]
async fn a_store_failure_is_retryable_and_the_retry_completes_once() {
    let faults = DynamoFaults::default();
    let store = faulty_store(&faults).await;
    funded_user(&store, 61, 100).await;
    let api = SpendApi::new(store.clone(), config(50));
    let client = Client {
        api: &api,
        key: service_key(&store, &[Scope::Spend, Scope::Read], 100).await.0,
    };
    // Warm the instance, then make DynamoDB unreachable for the next spend.
    client
        .post("/v1/spend", "warm", json!({"user_id": 61, "tokens": 1}))
        .await;
    faults.fail_after(0, 10);
    let failed = client
        .post("/v1/spend", "flaky", json!({"user_id": 61, "tokens": 9}))
        .await;
    assert_eq!(
        (failed.status, failed.code()),
        (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
    );
    assert_eq!(failed.headers["retry-after"], "1");
    faults.fail_after(0, 0);
    let retried = client
        .post("/v1/spend", "flaky", json!({"user_id": 61, "tokens": 9}))
        .await;
    assert_eq!(retried.status, StatusCode::OK, "{}", retried.body);
    let again = client
        .post("/v1/spend", "flaky", json!({"user_id": 61, "tokens": 9}))
        .await;
    assert_eq!(again.body, retried.body);
    assert_eq!(client.balance(61).await, (90, 0));
    assert_audit_ok(&store, 61).await;
}

#[tokio::test]
async fn crossing_the_low_balance_threshold_tells_the_user_once() {
    use tokenbill::domain::notification::{Message, NotificationId};
    let store = fresh_store().await;
    funded_user(&store, 71, 100).await;
    let api = SpendApi::new(
        store.clone(),
        SpendConfig {
            low_balance_threshold: Some(tokens(50)),
            ..config(50)
        },
    );
    let client = Client {
        api: &api,
        key: service_key(&store, &[Scope::Spend, Scope::Read], 100).await.0,
    };
    let alert_of = |answer: &Answer| {
        let tx = answer.body["transaction_id"].as_str().unwrap().parse().unwrap();
        NotificationId::low_balance(tx)
    };
    let above = client
        .post("/v1/spend", "a", json!({"user_id": 71, "tokens": 30}))
        .await;
    assert_eq!(above.body["balance_after"], 70);
    assert!(
        store.notification(&alert_of(&above)).await.unwrap().is_none(),
        "still above"
    );

    let crossing = client
        .post("/v1/spend", "b", json!({"user_id": 71, "tokens": 30}))
        .await;
    assert_eq!(crossing.body["balance_after"], 40);
    let alert = store
        .notification(&alert_of(&crossing))
        .await
        .unwrap()
        .expect("an alert");
    assert_eq!(alert.user, user(71));
    assert_eq!(alert.message, Message::LowBalance { threshold: tokens(50) });

    // A replay is the same spend: no second alert; below already: none either.
    let replay = client
        .post("/v1/spend", "b", json!({"user_id": 71, "tokens": 30}))
        .await;
    assert_eq!(replay.body, crossing.body);
    let below = client
        .post("/v1/spend", "c", json!({"user_id": 71, "tokens": 10}))
        .await;
    assert!(store.notification(&alert_of(&below)).await.unwrap().is_none());
    let undelivered = store
        .undelivered_notifications(chrono::Utc::now() + chrono::Duration::hours(1), 100)
        .await
        .unwrap();
    assert_eq!(undelivered.len(), 1, "one alert in the outbox: {undelivered:?}");
}
