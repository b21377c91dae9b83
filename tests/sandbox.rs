//! The dev runner's bot sandbox over HTTP (what the page does), and the
//! `getUpdates` long polling that serves a real bot, against the fake
//! Telegram: every update reaches the real webhook function with the
//! secret header, on DynamoDB Local and moto's SQS.

use std::time::Duration;

use serde_json::{Value, json};
use tokenbill_dev::fake_telegram::FakeTelegram;
use tokenbill_dev::updates::LongPoll;
use tokenbill_tests::{DevRunner, dev_runner, fresh_store, seed_catalog, user};

fn ann() -> Value {
    json!({ "id": 1001, "first_name": "Ann", "language_code": "en" })
}

/// What the sandbox page does: POST an action for Ann's chat.
async fn act(runner: &DevRunner, kind: &str, mut body: Value) -> Value {
    body["user"] = ann();
    let response = reqwest::Client::new()
        .post(format!("{}/sandbox/chats/1001/{kind}", runner.base))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let answer: Value = response.json().await.unwrap();
    assert!(status.is_success(), "{kind}: {status} {answer}");
    answer
}

async fn chat(runner: &DevRunner) -> Vec<Value> {
    let body: Value = reqwest::get(format!("{}/sandbox/chats/1001", runner.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["messages"].as_array().cloned().unwrap_or_default()
}

/// Waits (up to 15 s: the notifier is fed by a poller) for a bot message
/// whose text contains `text`.
async fn bot_message(runner: &DevRunner, text: &str) -> Value {
    for _ in 0..150 {
        if let Some(message) = chat(runner)
            .await
            .into_iter()
            .rev()
            .find(|m| m["from_bot"] == true && m["text"].as_str().unwrap_or_default().contains(text))
        {
            return message;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no bot message with {text:?} in {:#?}", chat(runner).await);
}

fn buttons(message: &Value) -> Vec<Value> {
    message["reply_markup"]["inline_keyboard"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|row| row.as_array().cloned().unwrap_or_default())
        .collect()
}

/// Presses the button whose label contains `label`.
async fn press(runner: &DevRunner, message: &Value, label: &str) -> Value {
    let button = buttons(message)
        .into_iter()
        .find(|b| b["text"].as_str().unwrap_or_default().contains(label))
        .unwrap_or_else(|| panic!("no button {label:?} on {message}"));
    act(
        runner,
        "presses",
        json!({ "message_id": message["message_id"], "data": button["callback_data"] }),
    )
    .await
}

async fn available(runner: &DevRunner) -> u64 {
    runner.store.balance(user(1001)).await.unwrap().0.available.get()
}

#[tokio::test]
async fn a_sandbox_purchase_with_the_demo_promo_pays_on_the_mock_checkout_and_notifies() {
    let runner = dev_runner().await;
    let page = reqwest::get(format!("{}/sandbox", runner.base)).await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("Tokenbill bot sandbox"));

    act(&runner, "messages", json!({ "text": "/start" })).await;
    let menu = bot_message(&runner, "Hello, Ann").await;
    press(&runner, &menu, "promo code").await;
    bot_message(&runner, "Send the promo code").await;
    act(&runner, "messages", json!({ "text": tokenbill_dev::DEMO_PROMO })).await;
    let accepted = bot_message(&runner, "accepted").await;

    press(&runner, &accepted, "Menu").await;
    // The button's message is edited: the menu, the catalog, the tariff.
    let menu = bot_message(&runner, "Hello, Ann").await;
    assert_eq!(
        menu["message_id"], accepted["message_id"],
        "an edit replaces the message"
    );
    assert_eq!(menu["edited"], true);
    press(&runner, &menu, "Buy tokens").await;
    let catalog = bot_message(&runner, "Choose a pack").await;
    press(&runner, &catalog, "100 tokens").await;
    let tariff = bot_message(&runner, "Promo code DEMO20").await;
    press(&runner, &tariff, "Pay by card").await;
    // 99 ₽ less 20%.
    let invoice = bot_message(&runner, "79.20 ₽").await;
    let pay_url = buttons(&invoice)
        .into_iter()
        .find_map(|b| b["url"].as_str().map(str::to_owned))
        .expect("a payment link");
    assert!(
        pay_url.starts_with(&format!("{}/payments/mock/checkout/", runner.base)),
        "{pay_url}"
    );

    // The mock checkout page's Pay button.
    let paid = reqwest::Client::new()
        .post(&pay_url)
        .form(&[("action", "pay")])
        .send()
        .await
        .unwrap();
    assert_eq!(paid.status(), 200);
    let page = paid.text().await.unwrap();
    assert!(page.contains("Payment succeeded"), "{page}");
    assert!(page.contains("/sandbox"), "back to the sandbox: {page}");

    bot_message(&runner, "Payment received").await;
    assert_eq!(available(&runner).await, 100);
}

#[tokio::test]
async fn a_stars_invoice_is_paid_with_pre_checkout_then_successful_payment() {
    let runner = dev_runner().await;
    act(&runner, "messages", json!({ "text": "/buy" })).await;
    let catalog = bot_message(&runner, "Choose a pack").await;
    press(&runner, &catalog, "100 tokens").await;
    let tariff = bot_message(&runner, "50 ⭐").await;
    press(&runner, &tariff, "Telegram Stars").await;

    let invoice = chat(&runner)
        .await
        .into_iter()
        .find(|m| !m["invoice"].is_null())
        .expect("a sendInvoice in the chat");
    assert_eq!(invoice["invoice"]["currency"], "XTR");
    let answer = act(&runner, "payments", json!({ "message_id": invoice["message_id"] })).await;
    assert_eq!(answer["notice"], Value::Null, "the bot accepted the pre-checkout");
    let calls = runner.app.telegram.as_ref().unwrap().calls();
    assert!(
        calls
            .iter()
            .any(|c| c.method == "answerprecheckoutquery" && c.params["ok"] == true),
        "{calls:?}"
    );
    bot_message(&runner, "Payment received").await;
    assert_eq!(available(&runner).await, 100);
    assert!(
        chat(&runner)
            .await
            .iter()
            .any(|m| m["service"] == true && m["text"] == "You paid ⭐ 50")
    );

    // Paying the same invoice again: the bot refuses the pre-checkout.
    let again = act(&runner, "payments", json!({ "message_id": invoice["message_id"] })).await;
    assert!(again["notice"].is_string(), "{again}");
    assert_eq!(available(&runner).await, 100);
}

#[tokio::test]
async fn a_stars_subscription_link_is_paid_as_its_first_recurring_charge() {
    let runner = dev_runner().await;
    act(&runner, "messages", json!({ "text": "/buy" })).await;
    let catalog = bot_message(&runner, "Choose a pack").await;
    press(&runner, &catalog, "Monthly subscription").await;
    let tariff = bot_message(&runner, "1000 ⭐").await;
    press(&runner, &tariff, "Telegram Stars").await;
    // createInvoiceLink made the link the invoice screen's button opens.
    let invoice = bot_message(&runner, "1000 ⭐ was created").await;
    let link = buttons(&invoice)
        .into_iter()
        .find_map(|b| b["url"].as_str().map(str::to_owned))
        .expect("the subscription's invoice link");
    assert!(link.starts_with("https://t.me/$"), "{link}");

    let answer = act(&runner, "payments", json!({ "link": link })).await;
    assert_eq!(answer["notice"], Value::Null, "the bot accepted the pre-checkout");
    bot_message(&runner, "Payment received").await;
    assert_eq!(available(&runner).await, 3000);
    let subscription = runner
        .store
        .subscription(user(1001))
        .await
        .unwrap()
        .expect("a subscription");
    assert!(
        matches!(
            subscription.renewal,
            Some(tokenbill::domain::subscription::RenewalMethod::TelegramStars { .. })
        ),
        "{subscription:?}"
    );
}

#[tokio::test]
async fn sandbox_input_is_checked() {
    let runner = dev_runner().await;
    let client = reqwest::Client::new();
    let post = |path: &str, body: Value| {
        client
            .post(format!("{}/sandbox/chats/{path}", runner.base))
            .json(&body)
            .send()
    };
    let refused = post("1002/messages", json!({ "user": ann(), "text": "hi" }))
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    assert_eq!(refused.json::<Value>().await.unwrap()["error"], "wrong_chat");
    let refused = post("1001/messages", json!({ "user": ann(), "text": "  " }))
        .await
        .unwrap();
    assert_eq!(refused.json::<Value>().await.unwrap()["error"], "bad_text");
    let refused = post(
        "1001/presses",
        json!({ "user": ann(), "message_id": 99, "data": "buy" }),
    )
    .await
    .unwrap();
    assert_eq!(refused.json::<Value>().await.unwrap()["error"], "no_message");
    let refused = post("1001/payments", json!({ "user": ann() })).await.unwrap();
    assert_eq!(refused.json::<Value>().await.unwrap()["error"], "bad_invoice");
}

#[tokio::test]
async fn get_updates_feeds_the_webhook_and_confirms_each_update() {
    let store = fresh_store().await;
    seed_catalog(&store).await;
    let telegram = FakeTelegram::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(telegram.clone().serve(listener));
    let bot = teloxide_core::Bot::new("123:token").set_api_url(api.parse().unwrap());
    let config = telegram_webhook::BotConfig::from_lookup(|name| match name {
        "TELEGRAM_WEBHOOK_SECRET" => Some("poll-secret".into()),
        _ => None,
    })
    .unwrap();
    let webhook = telegram_webhook::Webhook::new(store.clone(), bot, config);

    // A webhook is still set: getUpdates is refused until start() removes it.
    telegram
        .apply("setWebhook", json!({ "url": "https://example.com/hook" }))
        .await;
    let mut poll = LongPoll::new(&api, "123:token", 1);
    let refused = poll.poll_once(&webhook, "poll-secret").await.unwrap_err();
    assert!(refused.to_string().contains("Conflict"), "{refused}");
    poll.start().await.unwrap();

    let user = json!({ "id": 2001, "is_bot": false, "first_name": "Poll", "language_code": "en" });
    let message = |id: i64, text: &str| {
        json!({ "update_id": id, "message": { "message_id": id, "date": 1_700_000_000,
            "chat": { "id": 2001, "type": "private" }, "from": user, "text": text } })
    };
    telegram.queue_update(message(500, "/start"));
    telegram.queue_update(message(501, "/balance"));
    assert_eq!(poll.poll_once(&webhook, "poll-secret").await.unwrap(), 2);
    assert_eq!(poll.offset(), 502);
    // The webhook answered each with its reply in the body; the poller made
    // those calls, so both screens are in the chat.
    let texts: Vec<String> = telegram.chat(2001).into_iter().map(|m| m.text).collect();
    assert!(texts.iter().any(|t| t.contains("Hello, Poll")), "{texts:?}");
    assert!(texts.iter().any(|t| t.contains("Available")), "{texts:?}");

    // The next poll confirms them (offset 502): nothing comes back twice.
    assert_eq!(poll.poll_once(&webhook, "poll-secret").await.unwrap(), 0);
    assert_eq!(telegram.pending_updates(), 0);
    let polls: Vec<_> = telegram
        .calls()
        .into_iter()
        .filter(|c| c.method == "getupdates")
        .map(|c| c.params["offset"].clone())
        .collect();
    assert_eq!(polls, vec![json!(0), json!(0), json!(502)]);

    // A webhook that refuses (wrong secret) leaves the offset where it was:
    // the update is polled again.
    telegram.queue_update(message(502, "/help"));
    let failed = poll.poll_once(&webhook, "wrong-secret").await.unwrap_err();
    assert!(failed.to_string().contains("update 502"), "{failed}");
    assert_eq!(poll.offset(), 502);
    assert_eq!(poll.poll_once(&webhook, "poll-secret").await.unwrap(), 1);
    assert_eq!(poll.offset(), 503);
}
