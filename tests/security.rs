//! Hostile input to every HTTP function, over HTTP on the local runner's
//! router (DynamoDB Local, moto's SQS, fake Telegram and Robokassa):
//! oversized bodies, unicode and control characters in every text field,
//! numbers at and just past every bound, replayed provider callbacks; and
//! the logs of all of it never show a secret.
//!
//! What other suites already cover is not repeated here: the webhook's
//! secret header (`bot.rs`), forged and altered Robokassa callbacks
//! (`robokassa.rs`), forged and stale mock callbacks (`payments.rs`),
//! revoked and wrong-scope keys and most malformed spend requests
//! (`spend_api.rs`).

use std::io::Write;
use std::sync::{Arc, Mutex};

use chrono::Utc;
use payment_webhook::{PaymentConfig, PaymentWebhook};
use rust_decimal::Decimal;
use serde_json::{Value, json};
use spend_api::{SpendApi, SpendConfig};
use telegram_webhook::{BotConfig, Webhook};
use tokenbill::Store;
use tokenbill::domain::invoice::{Invoice, InvoiceStatus, Provider};
use tokenbill::domain::service_key::{RatePerSecond, Scope};
use tokenbill::payments::mock::{MockEvent, MockProvider, SIGNATURE_HEADER};
use tokenbill::payments::robokassa::{HashAlgorithm, RobokassaConfig};
use tokenbill::queue::NotificationQueue;
use tokenbill::store::NewInvoice;
use tokenbill_dev::fake_robokassa::FakeRobokassa;
use tokenbill_dev::fake_telegram::{self, FakeTelegram};
use tokenbill_tests::{fresh_store, funded_user, register, seed_catalog, service_key, sqs, unique_name, user};

// Secrets distinctive enough that any appearance in a log is a leak.
const BOT_TOKEN: &str = "7331337:AAHsecretBotTokenNeverLogged_x9Qz";
const WEBHOOK_SECRET: &str = "webhook-secret-NeverLogged-4kT2";
const MOCK_SECRET: &str = "mock-hmac-key-NeverLogged-7Yp1";
const ROBOKASSA_PASSWORD1: &str = "robokassa-pass-one-NeverLogged";
const ROBOKASSA_PASSWORD2: &str = "robokassa-pass-two-NeverLogged";

/// Every function behind one loopback endpoint, configured with the
/// secrets above.
struct World {
    base: String,
    store: Store,
    http: reqwest::Client,
    telegram: FakeTelegram,
    robokassa: FakeRobokassa,
    mock: MockProvider,
    /// A key with both scopes.
    service_key: String,
}

async fn world() -> World {
    captured_logs();
    let store = fresh_store().await;
    seed_catalog(&store).await;
    let sqs = sqs().await;
    let queue_url = tokenbill::resources::create_queues(&sqs, &unique_name("sec"))
        .await
        .expect("create queues")
        .into_iter()
        .find(|(id, _)| *id == tokenbill::resources::NOTIFICATION_QUEUE.logical_id)
        .map(|(_, url)| url)
        .expect("a notification queue");
    let queue = NotificationQueue::new(sqs, queue_url);

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let base = format!("http://{}", listener.local_addr().expect("bound address"));

    let telegram = FakeTelegram::default();
    let telegram_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let telegram_api = format!("http://{}", telegram_listener.local_addr().expect("bound address"));
    tokio::spawn(telegram.clone().serve(telegram_listener));
    let bot = teloxide_core::Bot::new(BOT_TOKEN).set_api_url(telegram_api.parse().expect("a URL"));

    let mut robokassa_config = RobokassaConfig {
        merchant_login: "tokenbill-security".to_owned(),
        password1: ROBOKASSA_PASSWORD1.to_owned(),
        password2: ROBOKASSA_PASSWORD2.to_owned(),
        is_test: true,
        algorithm: HashAlgorithm::Sha256,
        base_url: String::new(),
        culture: None,
    };
    let robokassa = FakeRobokassa::new(robokassa_config.clone());
    robokassa_config.base_url = robokassa.start().await.expect("start fake Robokassa");
    robokassa.set_shop(&base);

    let lookup = |name: &str| match name {
        "TELEGRAM_WEBHOOK_SECRET" => Some(WEBHOOK_SECRET.to_owned()),
        "PAYMENT_PROVIDERS" => Some("mock,robokassa".to_owned()),
        "PUBLIC_BASE_URL" => Some(base.clone()),
        _ => None,
    };
    let webhook =
        Webhook::new(store.clone(), bot, BotConfig::from_lookup(lookup).expect("bot config")).with_queue(queue.clone());
    let mock = MockProvider::new(MOCK_SECRET).expect("a long enough secret");
    let payments = PaymentWebhook::new(
        store.clone(),
        queue.clone(),
        PaymentConfig {
            mock: Some(mock.clone()),
            robokassa: Some(robokassa_config),
            bot_url: "https://t.me/tokenbill_bot".to_owned(),
        },
    );
    let spend = SpendApi::new(
        store.clone(),
        SpendConfig {
            user_rate: RatePerSecond::new(1_000).expect("a rate"),
            key_cache_ttl: std::time::Duration::ZERO,
            low_balance_threshold: None,
        },
    )
    .with_queue(queue);
    let state = tokenbill_dev::AppState {
        store: store.clone(),
        webhook: Arc::new(webhook),
        payments: Arc::new(payments),
        spend: Arc::new(spend),
        sandbox: None,
    };
    tokio::spawn(tokenbill_dev::serve(listener, state, std::future::pending()));
    let service_key = service_key(&store, &[Scope::Spend, Scope::Read], 1_000).await.0;
    World {
        base,
        store,
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("an HTTP client"),
        telegram,
        robokassa,
        mock,
        service_key,
    }
}

/// An answer: status, and the body as JSON when it is JSON.
#[derive(Debug)]
struct Answer {
    status: u16,
    text: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or(Value::Null)
    }

    fn code(&self) -> String {
        self.json()["error"]["code"].as_str().unwrap_or_default().to_owned()
    }
}

impl World {
    async fn send(&self, request: reqwest::RequestBuilder) -> Answer {
        let response = request.send().await.expect("the server answers");
        let status = response.status().as_u16();
        Answer {
            status,
            text: response.text().await.unwrap_or_default(),
        }
    }

    async fn update(&self, body: impl Into<reqwest::Body>) -> Answer {
        self.send(
            self.http
                .post(format!("{}/telegram/webhook", self.base))
                .header(telegram_webhook::SECRET_HEADER, WEBHOOK_SECRET)
                .header("content-type", "application/json")
                .body(body),
        )
        .await
    }

    async fn mock_callback(&self, header: &str, body: Vec<u8>) -> Answer {
        self.send(
            self.http
                .post(format!("{}/payments/mock/callback", self.base))
                .header(SIGNATURE_HEADER, header)
                .body(body),
        )
        .await
    }

    async fn robokassa_result(&self, body: String) -> Answer {
        self.send(
            self.http
                .post(format!("{}/payments/robokassa/result", self.base))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body),
        )
        .await
    }

    async fn spend_with(&self, key: &str, idempotency: &str, body: impl Into<reqwest::Body>) -> Answer {
        self.send(
            self.http
                .post(format!("{}/v1/spend", self.base))
                .bearer_auth(key)
                .header("idempotency-key", idempotency)
                .header("content-type", "application/json")
                .body(body),
        )
        .await
    }

    async fn spend(&self, idempotency: &str, body: impl Into<reqwest::Body>) -> Answer {
        self.spend_with(&self.service_key, idempotency, body).await
    }

    async fn get(&self, path: &str) -> Answer {
        self.send(
            self.http
                .get(format!("{}{path}", self.base))
                .bearer_auth(&self.service_key),
        )
        .await
    }

    async fn available(&self, id: i64) -> u64 {
        self.store.balance(user(id)).await.expect("balance").0.available.get()
    }

    async fn invoice(&self, id: i64, provider: Provider) -> Invoice {
        register(&self.store, id).await;
        let order = NewInvoice {
            user: user(id),
            tariff_id: tokenbill::domain::TariffId::new("pack_100").expect("a tariff id"),
            provider,
            promo: None,
        };
        self.store
            .create_invoice(order, chrono::Duration::hours(1))
            .await
            .expect("create invoice")
    }

    async fn status(&self, invoice: &Invoice) -> InvoiceStatus {
        self.store
            .invoice(&invoice.id)
            .await
            .expect("read invoice")
            .expect("the invoice exists")
            .status
    }

    /// Opens a Robokassa invoice's pay link and the fake's payment page:
    /// the fake then knows the `InvId`; returns it.
    async fn robokassa_inv_id(&self, invoice: &Invoice) -> u32 {
        let redirect = self
            .http
            .get(format!("{}/payments/robokassa/pay/{}", self.base, invoice.id))
            .send()
            .await
            .expect("pay link answers");
        assert_eq!(redirect.status().as_u16(), 302);
        let page = url::Url::parse(redirect.headers()["location"].to_str().expect("ASCII")).expect("a URL");
        let opened = self.http.get(page.clone()).send().await.expect("payment page");
        assert_eq!(opened.status().as_u16(), 200);
        page.query_pairs()
            .find(|(name, _)| name == "InvId")
            .and_then(|(_, value)| value.parse().ok())
            .expect("an InvId")
    }
}

fn mock_event(invoice: &Invoice, payment_id: &str) -> MockEvent {
    MockEvent {
        payment_id: payment_id.to_owned(),
        ..MockEvent::paying(invoice)
    }
}

/// The bot, as the author of the messages its buttons are on.
static BOT_USER: std::sync::LazyLock<Value> =
    std::sync::LazyLock::new(|| json!({ "id": 1, "is_bot": true, "first_name": "Tokenbill" }));

fn message(update_id: u32, from: Value, text: &str) -> Value {
    let id = from["id"].clone();
    json!({ "update_id": update_id, "message": {
        "message_id": update_id, "date": 1_764_000_000,
        "chat": { "id": id, "type": "private", "first_name": "x" }, "from": from, "text": text
    }})
}

fn person(id: i64, first_name: &str, last_name: &str, username: &str) -> Value {
    json!({ "id": id, "is_bot": false, "first_name": first_name, "last_name": last_name,
            "username": username, "language_code": "en" })
}

/// The text of the bot's answer in the webhook response, or of its last
/// Bot API call.
fn reply_text(answer: &Answer) -> String {
    answer.json()["text"].as_str().unwrap_or_default().to_owned()
}

/// Strings no text field may break: right-to-left overrides, emoji and
/// zero-width joiners, combining marks, NUL and other control characters,
/// invalid-looking escapes, and very long text.
fn hostile_texts() -> Vec<String> {
    vec![
        "\u{202e}gnp.exe\u{202c} \u{200f}עברית\u{200e}".to_owned(),
        "👩‍👩‍👧‍👦🏳️‍🌈🚀".to_owned(),
        "Z\u{0351}\u{0348}a\u{0362}\u{0321}l\u{035d}g\u{0489}o".to_owned(),
        "nul\u{0}bell\u{7}esc\u{1b}[31mdel\u{7f}c1\u{85}".to_owned(),
        "<b>&amp;</b> \"quotes\" 'single' \\ backslash %00 %zz".to_owned(),
        "\u{feff}\u{fffd}\u{10ffff}\u{e000}".to_owned(),
        "ж".repeat(5_000),
    ]
}

// ---------------------------------------------------------------------------
// Oversized bodies

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_are_refused_with_413_and_change_nothing() {
    let w = world().await;

    // Webhook: an update padded to exactly the limit is handled; one byte
    // more is refused unread.
    let padded_start = |update_id: u32, user_id: i64, size: usize| {
        let mut body = message(update_id, person(user_id, "Big", "", "big"), "/start").to_string();
        // JSON allows whitespace between tokens.
        body.insert_str(body.len() - 1, &" ".repeat(size - body.len()));
        assert_eq!(body.len(), size);
        body
    };
    let at_limit = w.update(padded_start(1, 901, telegram_webhook::MAX_BODY)).await;
    assert_eq!(at_limit.status, 200, "{}", at_limit.text);
    assert!(
        w.store.user(user(901)).await.unwrap().is_some(),
        "the update was handled"
    );
    let past_limit = w.update(padded_start(2, 902, telegram_webhook::MAX_BODY + 1)).await;
    assert_eq!(past_limit.status, 413, "{}", past_limit.text);
    assert!(past_limit.json()["error"].as_str().unwrap().contains("limited"));
    assert!(
        w.store.user(user(902)).await.unwrap().is_none(),
        "nothing was registered"
    );

    // Mock callback: a genuinely signed payment padded past the limit is
    // refused before its signature is read; at the limit it credits.
    let pad_json = |body: Vec<u8>, size: usize| {
        let mut body = body;
        body.resize(size, b' ');
        body
    };
    let refused = w.invoice(903, Provider::Mock).await;
    let body = pad_json(
        serde_json::to_vec(&mock_event(&refused, "pay_big")).unwrap(),
        payment_webhook::MAX_BODY + 1,
    );
    let answer = w.mock_callback(&w.mock.sign(&body, Utc::now()), body).await;
    assert_eq!((answer.status, answer.code().as_str()), (413, "body_too_large"));
    assert_eq!(w.status(&refused).await, InvoiceStatus::Pending);
    let credited = w.invoice(904, Provider::Mock).await;
    let body = pad_json(
        serde_json::to_vec(&mock_event(&credited, "pay_at_limit")).unwrap(),
        payment_webhook::MAX_BODY,
    );
    let answer = w.mock_callback(&w.mock.sign(&body, Utc::now()), body).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(w.available(904).await, 100);

    // Robokassa ResultURL: the genuine callback with an unsigned extra
    // field past the limit is refused; Robokassa's retry (the plain body)
    // then credits once.
    let invoice = w.invoice(905, Provider::Robokassa).await;
    let inv_id = w.robokassa_inv_id(&invoice).await;
    let genuine = w.robokassa.result_callback_body(inv_id).unwrap();
    let mut oversized = format!("{genuine}&pad=");
    oversized.push_str(&"x".repeat(payment_webhook::MAX_BODY + 1 - oversized.len()));
    let answer = w.robokassa_result(oversized).await;
    assert_eq!(answer.status, 413, "{}", answer.text);
    assert_eq!(w.status(&invoice).await, InvoiceStatus::Pending);
    let answer = w.robokassa_result(genuine).await;
    assert_eq!((answer.status, answer.text), (200, format!("OK{inv_id}")));
    assert_eq!(w.available(905).await, 100);

    // Spend API: a spend padded to exactly the limit is taken; one byte
    // more is refused and takes nothing.
    funded_user(&w.store, 906, 1_000).await;
    let spend_of = |size: usize| pad_json(br#"{"user_id":906,"tokens":7}"#.to_vec(), size);
    let answer = w.spend("big-1", spend_of(spend_api::MAX_BODY + 1)).await;
    assert_eq!((answer.status, answer.code().as_str()), (413, "body_too_large"));
    assert_eq!(w.available(906).await, 1_000);
    let answer = w.spend("big-2", spend_of(spend_api::MAX_BODY)).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(w.available(906).await, 993);
}

// ---------------------------------------------------------------------------
// Unicode and control characters

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_text_in_bot_updates_is_stored_faithfully_and_answered_safely() {
    let w = world().await;
    for (n, text) in hostile_texts().into_iter().enumerate() {
        let id = 1_000 + n as i64;
        let update_id = 10 * n as u32;
        // Telegram caps names at 64 characters; the bot must not rely on it.
        let first_name = text.clone();
        let last_name: String = text.chars().rev().collect();
        let start = w
            .update(message(update_id + 1, person(id, &first_name, &last_name, &text), "/start").to_string())
            .await;
        assert_eq!(start.status, 200, "{text:?}: {}", start.text);
        let stored = w.store.user(user(id)).await.unwrap().expect("registered");
        assert_eq!(stored.first_name, first_name, "stored as sent");
        assert_eq!(stored.last_name.as_deref(), Some(last_name.as_str()));
        assert_eq!(stored.username.as_deref(), Some(text.as_str()));

        // As a promo code, plain text, a command's arguments and a button.
        for (k, typed) in [format!("/promo {text}"), text.clone(), format!("/user {text}")]
            .into_iter()
            .enumerate()
        {
            let answer = w
                .update(message(update_id + 2 + k as u32, person(id, &first_name, "", ""), &typed).to_string())
                .await;
            assert_eq!(answer.status, 200, "{typed:?}: {}", answer.text);
            let reply = reply_text(&answer);
            assert!(!reply.is_empty(), "{typed:?} got an answer: {}", answer.text);
            assert!(
                !reply.chars().any(|c| c.is_control() && c != '\n'),
                "no control characters reach Telegram: {reply:?}"
            );
            assert!(reply.chars().count() <= tokenbill::text::MAX_MESSAGE_CHARS);
        }
        let button = json!({ "update_id": update_id + 6, "callback_query": {
            "id": format!("cb{update_id}"), "from": person(id, &first_name, "", ""), "chat_instance": "1",
            "data": text.chars().take(64).collect::<String>(),
            "message": { "message_id": 5, "date": 1_764_000_000, "from": BOT_USER.clone(),
                         "chat": { "id": id, "type": "private", "first_name": "x" }, "text": "menu" }
        }});
        let answer = w.update(button.to_string()).await;
        assert_eq!(answer.status, 200, "{}", answer.text);
        assert_eq!(answer.json()["method"], "AnswerCallbackQuery", "a stale-button answer");
        assert!(reply_text(&answer).contains("out of date"), "{}", answer.text);
    }
    // Nothing the users typed was a code, and nothing was credited.
    for n in 0..hostile_texts().len() {
        assert_eq!(w.available(1_000 + n as i64).await, 0);
    }
    // Every call the bot made to Telegram was accepted as it was sent.
    assert!(
        w.telegram
            .calls()
            .iter()
            .all(|call| !call.params.to_string().contains('\u{0}'))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_text_in_spend_fields_is_stored_faithfully_or_refused_with_a_code() {
    let w = world().await;
    funded_user(&w.store, 77, 1_000).await;
    let mut accepted = Vec::new();
    for (n, text) in hostile_texts().into_iter().enumerate() {
        let has_control = text.chars().any(char::is_control);
        let too_long = text.chars().count() > 256;
        let body = json!({ "user_id": 77, "tokens": 1, "description": text });
        let answer = w.spend(&format!("text-{n}"), body.to_string()).await;
        if has_control || too_long {
            assert_eq!(
                (answer.status, answer.code().as_str()),
                (400, "invalid_field"),
                "{text:?}"
            );
        } else {
            assert_eq!(answer.status, 200, "{text:?}: {}", answer.text);
            accepted.push(text.clone());
        }
        // Metadata is the caller's JSON: any string in it is kept exactly,
        // control characters included, within its size limit.
        let metadata = json!({ text.chars().take(40).collect::<String>(): text.chars().take(300).collect::<String>() });
        let body = json!({ "user_id": 77, "tokens": 1, "metadata": metadata });
        let answer = w.spend(&format!("meta-{n}"), body.to_string()).await;
        if metadata.to_string().len() > spend_api::request::MAX_METADATA_BYTES {
            assert_eq!((answer.status, answer.code().as_str()), (400, "invalid_field"));
        } else {
            assert_eq!(answer.status, 200, "{metadata}: {}", answer.text);
        }
        // The refund's reason is checked like a description.
        if answer.status == 200 {
            let refund = json!({ "transaction_id": answer.json()["transaction_id"], "tokens": 1, "reason": text });
            let refunded = w
                .send(
                    w.http
                        .post(format!("{}/v1/refunds", w.base))
                        .bearer_auth(&w.service_key)
                        .header("idempotency-key", format!("refund-{n}"))
                        .body(refund.to_string()),
                )
                .await;
            let expected = if has_control || too_long { 400 } else { 200 };
            assert_eq!(refunded.status, expected, "{text:?}: {}", refunded.text);
        }
    }
    // Exactly 256 four-byte characters is within the limit.
    let longest = "🚀".repeat(256);
    let answer = w
        .spend(
            "longest",
            json!({ "user_id": 77, "tokens": 1, "description": longest }).to_string(),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    accepted.push(longest);

    // What was accepted reads back byte for byte.
    let page = w.get("/v1/users/77/transactions?limit=100").await;
    assert_eq!(page.status, 200, "{}", page.text);
    let entries = page.json()["transactions"].as_array().cloned().unwrap_or_default();
    let descriptions: Vec<&str> = entries.iter().filter_map(|e| e["description"].as_str()).collect();
    for text in &accepted {
        assert!(descriptions.contains(&text.as_str()), "{text:?} not stored faithfully");
    }
    let metadata: Vec<&Value> = entries
        .iter()
        .map(|e| &e["metadata"])
        .filter(|m| m.is_object())
        .collect();
    assert!(
        metadata.iter().any(|m| m.to_string().contains("\\u0000")),
        "a NUL in metadata is kept: {metadata:?}"
    );
    assert!(w.store.audit(user(77)).await.unwrap().is_ok());

    // Idempotency keys are visible ASCII only.
    for bad in ["ключ", "tab\tkey", "emoji🚀"] {
        let answer = w
            .send(
                w.http
                    .post(format!("{}/v1/spend", w.base))
                    .bearer_auth(&w.service_key)
                    .header(
                        "idempotency-key",
                        reqwest::header::HeaderValue::from_bytes(bad.as_bytes()).unwrap(),
                    )
                    .body(r#"{"user_id":77,"tokens":1}"#),
            )
            .await;
        assert_eq!(
            (answer.status, answer.code().as_str()),
            (400, "idempotency_key_invalid"),
            "{bad:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_text_in_callback_params_is_refused_without_effect() {
    let w = world().await;
    let invoice = w.invoice(88, Provider::Robokassa).await;
    let inv_id = w.robokassa_inv_id(&invoice).await;
    let genuine = w.robokassa.result_callback_body(inv_id).unwrap();
    let mock_invoice = w.invoice(89, Provider::Mock).await;
    for text in hostile_texts() {
        let encoded: String = url::form_urlencoded::byte_serialize(text.as_bytes()).collect();
        // Robokassa: our invoice id replaced, an extra signed Shp_ field,
        // a culture or e-mail: the signature no longer holds, or the field
        // is not ours. Sent as form bodies and as raw bytes.
        for body in [
            genuine.replace(
                &format!("Shp_invoice={}", invoice.id),
                &format!("Shp_invoice={encoded}"),
            ),
            format!("{genuine}&Shp_note={encoded}"),
            format!("{genuine}&Culture={encoded}&EMail={encoded}"),
        ] {
            let answer = w.robokassa_result(body).await;
            assert_eq!(answer.status, 400, "{text:?}: {}", answer.text);
        }
        let raw = format!("OutSum=99.00&InvId={inv_id}&SignatureValue={text}&Shp_invoice={text}");
        let answer = w.robokassa_result(raw).await;
        assert!(matches!(answer.status, 400 | 404), "{text:?}: {}", answer.text);
        // Browser routes show a page, never an error dump.
        for route in ["success", "fail"] {
            let answer = w
                .send(w.http.get(format!(
                    "{}/payments/robokassa/{route}?OutSum=1&InvId={inv_id}&Shp_invoice={encoded}&SignatureValue={encoded}",
                    w.base
                )))
                .await;
            assert!(answer.status < 500, "{route} {text:?}: {}", answer.text);
            assert!(!answer.text.contains(&text), "the page does not echo it");
        }

        // Mock: a genuinely signed body whose ids are hostile text.
        let mut event = mock_event(&mock_invoice, &text);
        let (header, body) = w.mock.callback(&event, Utc::now());
        let answer = w.mock_callback(&header, body).await;
        assert_eq!(
            answer.status, 200,
            "a payment id is the provider's text: {}",
            answer.text
        );
        event.payment_id = "pay".to_owned();
        let mut with_hostile_invoice = serde_json::to_value(&event).unwrap();
        with_hostile_invoice["invoice_id"] = json!(text);
        let body = with_hostile_invoice.to_string().into_bytes();
        let answer = w.mock_callback(&w.mock.sign(&body, Utc::now()), body).await;
        assert_eq!(
            (answer.status, answer.code().as_str()),
            (400, "malformed"),
            "{text:?}: {}",
            answer.text
        );
    }
    assert_eq!(w.status(&invoice).await, InvoiceStatus::Pending);
    assert_eq!(w.available(88).await, 0);
    // The mock invoice was paid once, by the first genuine callback.
    assert_eq!(w.available(89).await, 100);
}

// ---------------------------------------------------------------------------
// Numbers at and past their bounds

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numbers_at_and_past_every_bound() {
    let w = world().await;
    funded_user(&w.store, 55, 1_000).await;
    let max = spend_api::request::MAX_REQUEST_TOKENS;
    // (body, status, code): amounts, user ids, hold lifetimes.
    let cases: Vec<(String, u16, &str)> = vec![
        (r#"{"user_id":55,"tokens":1}"#.into(), 200, ""),
        (
            format!(r#"{{"user_id":55,"tokens":{max}}}"#),
            402,
            "insufficient_tokens",
        ),
        (
            format!(r#"{{"user_id":55,"tokens":{}}}"#, max + 1),
            400,
            "invalid_amount",
        ),
        (r#"{"user_id":55,"tokens":0}"#.into(), 400, "invalid_amount"),
        (r#"{"user_id":55,"tokens":-1}"#.into(), 400, "invalid_amount"),
        (r#"{"user_id":55,"tokens":-0}"#.into(), 400, "invalid_amount"),
        (r#"{"user_id":55,"tokens":1.0}"#.into(), 400, "invalid_amount"),
        (r#"{"user_id":55,"tokens":1e0}"#.into(), 400, "invalid_amount"),
        (r#"{"user_id":55,"tokens":0.5}"#.into(), 400, "invalid_amount"),
        (
            r#"{"user_id":55,"tokens":18446744073709551615}"#.into(),
            400,
            "invalid_amount",
        ),
        (
            r#"{"user_id":55,"tokens":18446744073709551616}"#.into(),
            400,
            "invalid_amount",
        ),
        (r#"{"user_id":55,"tokens":1e400}"#.into(), 400, "invalid_json"),
        (r#"{"user_id":55,"tokens":true}"#.into(), 400, "invalid_amount"),
        (r#"{"user_id":1,"tokens":1}"#.into(), 404, "user_not_found"),
        (
            r#"{"user_id":9223372036854775807,"tokens":1}"#.into(),
            400,
            "invalid_field",
        ),
        (
            r#"{"user_id":9223372036854775808,"tokens":1}"#.into(),
            400,
            "invalid_field",
        ),
        (r#"{"user_id":55.0,"tokens":1}"#.into(), 400, "invalid_field"),
        (
            r#"{"user_id":-9223372036854775808,"tokens":1}"#.into(),
            400,
            "invalid_field",
        ),
    ];
    for (n, (body, status, code)) in cases.iter().enumerate() {
        let answer = w.spend(&format!("bound-{n}"), body.clone()).await;
        assert_eq!(answer.status, *status, "{body}: {}", answer.text);
        assert_eq!(answer.code(), *code, "{body}");
    }
    assert_eq!(w.available(55).await, 999, "only the one-token spend moved tokens");

    let hold = |ttl: &str| format!(r#"{{"user_id":55,"tokens":1,"ttl_seconds":{ttl}}}"#);
    for (n, (ttl, status)) in [
        ("1", 200),
        ("86400", 200),
        ("0", 400),
        ("86401", 400),
        ("-1", 400),
        ("1.5", 400),
        ("1e2", 400),
    ]
    .into_iter()
    .enumerate()
    {
        let answer = w
            .send(
                w.http
                    .post(format!("{}/v1/holds", w.base))
                    .bearer_auth(&w.service_key)
                    .header("idempotency-key", format!("hold-{n}"))
                    .body(hold(ttl)),
            )
            .await;
        assert_eq!(answer.status, status, "ttl {ttl}: {}", answer.text);
    }

    for (limit, status) in [
        ("1", 200),
        ("100", 200),
        ("0", 400),
        ("101", 400),
        ("-1", 400),
        ("1e1", 400),
    ] {
        let answer = w.get(&format!("/v1/users/55/transactions?limit={limit}")).await;
        assert_eq!(answer.status, status, "limit {limit}: {}", answer.text);
    }
    for path in ["0", "-1", "9223372036854775808", "1e3", "55.0"] {
        let answer = w.get(&format!("/v1/users/{path}/balance")).await;
        assert_eq!(
            (answer.status, answer.code().as_str()),
            (400, "invalid_field"),
            "user {path}"
        );
    }

    // Mock callbacks: only the exact amount due, in the invoice's
    // currency, credits (genuinely signed, so the amount is what is judged).
    let invoice = w.invoice(56, Provider::Mock).await;
    let due = invoice.amount_due.amount();
    for (n, amount) in [
        "0",
        "-1",
        "0.01",
        "98.99",
        "99.001",
        "99.01",
        "1e2",
        "79228162514264337593543950335",
        "79228162514264337593543950336",
        "NaN",
    ]
    .into_iter()
    .enumerate()
    {
        let mut event = serde_json::to_value(mock_event(&invoice, &format!("amount-{n}"))).unwrap();
        event["amount"] = json!(amount);
        let body = event.to_string().into_bytes();
        let answer = w.mock_callback(&w.mock.sign(&body, Utc::now()), body).await;
        assert!(
            matches!(answer.status, 400 | 409),
            "amount {amount} (due {due}): {}",
            answer.text
        );
    }
    assert_eq!(w.status(&invoice).await, InvoiceStatus::Pending);
    // Trailing zeros are the same amount.
    let mut event = serde_json::to_value(mock_event(&invoice, "exact")).unwrap();
    event["amount"] = json!(format!("{}", due.round_dp(2) * Decimal::ONE + Decimal::new(0, 4)));
    let body = event.to_string().into_bytes();
    let answer = w.mock_callback(&w.mock.sign(&body, Utc::now()), body).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(w.available(56).await, 100);

    // Robokassa InvId: 1..=2^31-1 in canonical digits; anything else is
    // malformed before any signature is checked.
    for inv_id in ["0", "-1", "2147483648", "4294967296", "01", "1.0", "1e3", " 1"] {
        let answer = w
            .robokassa_result(format!("OutSum=99.00&InvId={inv_id}&SignatureValue=00&Shp_invoice=x"))
            .await;
        assert_eq!(
            (answer.status, answer.text.as_str()),
            (400, "malformed"),
            "InvId {inv_id:?}"
        );
    }
}

// ---------------------------------------------------------------------------
// Replays

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_provider_callbacks_credit_once() {
    let w = world().await;
    // Mock: the same callback again, re-signed later, and under another
    // payment id: one invoice is paid once.
    let invoice = w.invoice(61, Provider::Mock).await;
    let event = mock_event(&invoice, "pay_61");
    let (header, body) = w.mock.callback(&event, Utc::now());
    for _ in 0..3 {
        let answer = w.mock_callback(&header, body.clone()).await;
        assert_eq!(answer.status, 200, "{}", answer.text);
    }
    let (header, body) = w.mock.callback(&event, Utc::now() + chrono::Duration::seconds(90));
    assert_eq!(w.mock_callback(&header, body).await.status, 200);
    let (header, body) = w.mock.callback(&mock_event(&invoice, "pay_61_again"), Utc::now());
    let other_payment = w.mock_callback(&header, body).await;
    assert_ne!(other_payment.status, 500, "{}", other_payment.text);
    // A replay from outside the window is refused outright.
    let (header, body) = w.mock.callback(&event, Utc::now() - chrono::Duration::minutes(6));
    assert_eq!(w.mock_callback(&header, body).await.status, 401);
    assert_eq!(w.available(61).await, 100);

    // Robokassa: ResultURL repeated, sequentially and all at once, as GET
    // and as POST: `OK{InvId}` every time, credited once.
    let invoice = w.invoice(62, Provider::Robokassa).await;
    let inv_id = w.robokassa_inv_id(&invoice).await;
    let genuine = w.robokassa.result_callback_body(inv_id).unwrap();
    let ok = format!("OK{inv_id}");
    for _ in 0..3 {
        let answer = w.robokassa_result(genuine.clone()).await;
        assert_eq!((answer.status, answer.text.as_str()), (200, ok.as_str()));
    }
    let answers = futures::future::join_all((0..10).map(|_| w.robokassa_result(genuine.clone()))).await;
    assert!(answers.iter().all(|a| a.status == 200 && a.text == ok), "{answers:?}");
    let by_get = w
        .send(w.http.get(format!("{}/payments/robokassa/result?{genuine}", w.base)))
        .await;
    assert_eq!((by_get.status, by_get.text.as_str()), (200, ok.as_str()));
    assert_eq!(w.available(62).await, 100);
    assert_eq!(w.status(&invoice).await, InvoiceStatus::Paid);
    assert!(w.store.audit(user(62)).await.unwrap().is_ok());
}

// ---------------------------------------------------------------------------
// Logs

/// Where the captured log lines go.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// Every log line of this test process, from every crate at TRACE. One
/// global subscriber, installed before any test logs (each starts with
/// [`world`]): a per-thread one can miss events whose callsites other
/// tests hit first.
fn captured_logs() -> &'static Captured {
    static LOGS: std::sync::OnceLock<Captured> = std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        let captured = Captured::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(captured.clone())
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");
        captured
    })
}

/// The secret parts of a Robokassa callback's signature, and the mock
/// provider's HMAC, as they were sent.
fn signature_of(form: &str) -> String {
    url::form_urlencoded::parse(form.as_bytes())
        .find(|(name, _)| name == "SignatureValue")
        .map(|(_, value)| value.into_owned())
        .expect("a signature")
}

// The other tests here log into the same capture with the same secrets,
// so what they send is checked too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_never_show_a_secret_a_service_key_or_a_signature() {
    let w = world().await;
    let mut secrets: Vec<String> = [
        BOT_TOKEN,
        WEBHOOK_SECRET,
        MOCK_SECRET,
        ROBOKASSA_PASSWORD1,
        ROBOKASSA_PASSWORD2,
    ]
    .map(str::to_owned)
    .to_vec();
    secrets.push(w.service_key.clone());

    // The bot: a wrong secret, a start, a purchase through each provider,
    // and Telegram refusing a call.
    let wrong = w
        .send(
            w.http
                .post(format!("{}/telegram/webhook", w.base))
                .header(telegram_webhook::SECRET_HEADER, "not-the-secret")
                .body(message(1, person(70, "Eve", "", "eve"), "/start").to_string()),
        )
        .await;
    assert_eq!(wrong.status, 401);
    assert_eq!(
        w.update(message(2, person(70, "Ann", "", "ann"), "/start").to_string())
            .await
            .status,
        200
    );
    w.telegram.fail_next([fake_telegram::Failure::Blocked]);
    for (n, data) in ["p:mk:pack_100", "p:rk:pack_100", "bal"].into_iter().enumerate() {
        let update = json!({ "update_id": 10 + n, "callback_query": {
            "id": format!("cb{n}"), "from": person(70, "Ann", "", "ann"), "chat_instance": "1", "data": data,
            "message": { "message_id": 5, "date": 1_764_000_000, "from": BOT_USER.clone(),
                         "chat": { "id": 70, "type": "private", "first_name": "Ann" }, "text": "menu" }
        }});
        assert_eq!(w.update(update.to_string()).await.status, 200);
    }
    // Not an update: logged with its raw body (which is the sender's).
    assert_eq!(w.update("{\"update_id\":").await.status, 200);

    // The mock provider: a genuine callback, a forged one, a stale one.
    let invoice = w.invoice(71, Provider::Mock).await;
    let (header, body) = w.mock.callback(&mock_event(&invoice, "pay_71"), Utc::now());
    assert_eq!(w.mock_callback(&header, body.clone()).await.status, 200);
    let forged = header.replace("v1=", "v1=00");
    assert_eq!(w.mock_callback(&forged, body.clone()).await.status, 401);
    let (stale, stale_body) = w
        .mock
        .callback(&mock_event(&invoice, "pay_71"), Utc::now() - chrono::Duration::hours(1));
    assert_eq!(w.mock_callback(&stale, stale_body).await.status, 401);
    secrets.extend([header.clone(), header.split("v1=").nth(1).unwrap().to_owned()]);

    // Robokassa: paid through the fake, a tampered repeat, SuccessURL.
    let invoice = w.invoice(72, Provider::Robokassa).await;
    let inv_id = w.robokassa_inv_id(&invoice).await;
    assert_eq!(w.robokassa.pay(inv_id).await, Ok(format!("OK{inv_id}")));
    let genuine = w.robokassa.result_callback_body(inv_id).unwrap();
    let signature = signature_of(&genuine);
    assert_eq!(
        w.robokassa_result(genuine.replace("OutSum=", "OutSum=1")).await.status,
        400
    );
    let success = w.robokassa.success_query(inv_id).unwrap();
    let page = w
        .send(w.http.get(format!("{}/payments/robokassa/success?{success}", w.base)))
        .await;
    assert_eq!(page.status, 200, "{}", page.text);
    secrets.extend([
        signature.clone(),
        signature.to_ascii_lowercase(),
        signature_of(&success),
    ]);
    assert_eq!(w.available(71).await + w.available(72).await, 200);

    // The spend API: a spend, an unknown key, a revoked key, a key in the
    // wrong header shape.
    funded_user(&w.store, 73, 100).await;
    let body = r#"{"user_id":73,"tokens":5}"#;
    assert_eq!(w.spend("log-1", body).await.status, 200);
    let unknown = format!("tbk_{}_{}", "a".repeat(12), "b".repeat(64));
    assert_eq!(w.spend_with(&unknown, "log-2", body).await.status, 401);
    let revoked = service_key(&w.store, &[Scope::Spend], 1_000).await.0;
    let revoked_id = revoked.split('_').nth(1).unwrap().to_owned();
    w.store
        .revoke_service_key(&tokenbill::domain::service_key::KeyId::try_from(revoked_id).unwrap())
        .await
        .unwrap();
    assert_eq!(w.spend_with(&revoked, "log-3", body).await.status, 401);
    let shaped_wrong = w
        .send(
            w.http
                .post(format!("{}/v1/spend", w.base))
                .header("authorization", format!("Token {}", w.service_key))
                .body(body),
        )
        .await;
    assert_eq!(shaped_wrong.status, 401);
    secrets.extend([unknown, revoked]);

    let logs = String::from_utf8_lossy(&captured_logs().0.lock().unwrap()).into_owned();
    // The flows really logged (so an empty capture cannot pass).
    for expected in [
        "webhook call without the right secret header",
        "mock payment credited",
        "Robokassa payment credited",
        "payment request refused",
        "spend API refused",
    ] {
        assert!(logs.contains(expected), "{expected:?} was not logged");
    }
    for secret in &secrets {
        assert!(!secret.is_empty());
        if let Some(line) = logs.lines().find(|line| line.contains(secret.as_str())) {
            panic!("a secret ({} chars) reached the logs: {line}", secret.len());
        }
    }
}
