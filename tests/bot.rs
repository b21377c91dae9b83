//! The Telegram webhook, fed real-shaped updates in-process, against
//! DynamoDB Local and a fake Bot API server on loopback.

use futures::future::join_all;
use serde_json::{Value, json};
use telegram_webhook::{BotConfig, Webhook};
use tokenbill::Store;
use tokenbill::domain::invoice::Provider;
use tokenbill::domain::promo::{PromoCode, PromoCodeText, PromoEffect};
use tokenbill::domain::user::Language;
use tokenbill_dev::fake_telegram::{Call, FakeTelegram};
use tokenbill_tests::faults::{DynamoFaults, faulty_store};
use tokenbill_tests::updates::{callback, chat, from, message, pre_checkout, successful_payment};
use tokenbill_tests::{seed_catalog, tokens, user};

const SECRET: &str = "test-secret_123";
const OPERATOR: i64 = 900;

struct Harness {
    webhook: Webhook,
    store: Store,
    telegram: FakeTelegram,
    faults: DynamoFaults,
}

async fn harness() -> Harness {
    let telegram = FakeTelegram::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(telegram.clone().serve(listener));
    let faults = DynamoFaults::default();
    let store = faulty_store(&faults).await;
    seed_catalog(&store).await;
    let config = BotConfig {
        webhook_secret: SECRET.into(),
        bot_username: Some("TokenbillBot".into()),
        operators: vec![OPERATOR],
        support_contact: "@help_desk".into(),
        providers: vec![Provider::Mock, Provider::TelegramStars],
        public_base_url: "http://pay.local".into(),
        invoice_ttl: chrono::Duration::hours(1),
    };
    let bot = teloxide_core::Bot::new("123:TEST").set_api_url(api.parse().unwrap());
    Harness {
        webhook: Webhook::new(store.clone(), bot, config),
        store,
        telegram,
        faults,
    }
}

impl Harness {
    async fn post_with(&self, update: &Value, secret: Option<&str>) -> (u16, Value) {
        let mut request = http::Request::builder().method("POST").uri("/telegram/webhook");
        if let Some(secret) = secret {
            request = request.header("X-Telegram-Bot-Api-Secret-Token", secret);
        }
        let response = self.webhook.handle(request.body(update.to_string()).unwrap()).await;
        let status = response.status().as_u16();
        (status, serde_json::from_str(response.body()).unwrap_or(Value::Null))
    }

    async fn post(&self, update: &Value) -> (u16, Value) {
        self.post_with(update, Some(SECRET)).await
    }

    /// Posts and expects one reply in the response body; returns it.
    async fn reply(&self, update: &Value) -> Value {
        let (status, body) = self.post(update).await;
        assert_eq!(status, 200, "{body}");
        body
    }
}

fn membership(update_id: u32, user: i64, status: &str) -> Value {
    let bot = json!({ "id": 1, "is_bot": true, "first_name": "Tokenbill" });
    let mut new_member = json!({ "user": bot, "status": status });
    if status == "kicked" {
        new_member["until_date"] = json!(0);
    }
    json!({ "update_id": update_id, "my_chat_member": {
        "chat": chat(user), "from": from(user, "en"), "date": 1_764_000_000,
        "old_chat_member": { "user": bot, "status": if status == "kicked" { "member" } else { "kicked" }, "until_date": 0 },
        "new_chat_member": new_member
    }})
}

fn promo(text: &str, effect: PromoEffect) -> PromoCode {
    PromoCode::new(PromoCodeText::new(text).unwrap(), effect)
}

fn text_of(reply: &Value) -> &str {
    reply["text"].as_str().unwrap_or_default()
}

fn buttons(reply: &Value) -> Vec<(String, String)> {
    reply["reply_markup"]["inline_keyboard"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|row| row.as_array().cloned().unwrap_or_default())
        .map(|b| {
            let target = b["callback_data"]
                .as_str()
                .or(b["url"].as_str())
                .unwrap_or_default()
                .to_owned();
            (b["text"].as_str().unwrap_or_default().to_owned(), target)
        })
        .collect()
}

#[tokio::test]
async fn the_secret_header_is_required() {
    let h = harness().await;
    let start = message(1, 10, "/start");
    for secret in [None, Some("wrong"), Some("test-secret_12"), Some("test-secret_1234")] {
        let (status, _) = h.post_with(&start, secret).await;
        assert_eq!(status, 401, "{secret:?}");
    }
    assert!(h.store.user(user(10)).await.unwrap().is_none(), "nothing happened");
    assert!(h.telegram.calls().is_empty());
    let get = http::Request::builder().method("GET").body(String::new()).unwrap();
    assert_eq!(h.webhook.handle(get).await.status(), 405);
}

#[tokio::test]
async fn start_registers_and_answers_in_the_response_body() {
    let h = harness().await;
    let reply = h.reply(&message(1, 10, "/start")).await;
    assert_eq!(reply["method"], "SendMessage");
    assert_eq!(reply["chat_id"], 10);
    assert_eq!(reply["parse_mode"], "HTML");
    assert!(
        text_of(&reply).contains("Hello, Ann &lt;&amp;&gt;!"),
        "names are escaped: {}",
        text_of(&reply)
    );
    let labels: Vec<String> = buttons(&reply).into_iter().map(|(label, _)| label).collect();
    assert!(
        labels.iter().any(|l| l.contains("Buy tokens")) && labels.iter().any(|l| l.contains("History")),
        "{labels:?}"
    );
    for (_, data) in buttons(&reply) {
        assert!(data.len() <= 64);
    }
    let ann = h.store.user(user(10)).await.unwrap().unwrap();
    assert_eq!((ann.username.as_deref(), ann.language), (Some("ann"), Language::En));
    assert!(
        h.telegram.calls().is_empty(),
        "one reply travels in the response, not as a call"
    );

    // A Russian speaker gets Russian.
    let mut ru = message(2, 11, "/start");
    ru["message"]["from"]["language_code"] = json!("ru");
    assert!(text_of(&h.reply(&ru).await).starts_with("Здравствуйте"));
}

#[tokio::test]
async fn start_payloads_apply_a_promo_or_record_a_referrer() {
    let h = harness().await;
    let code = promo;
    h.store
        .create_promo(&code("WELCOME", PromoEffect::PercentDiscount { percent: 10.into() }))
        .await
        .unwrap();
    h.store
        .create_promo(&code("GIFT", PromoEffect::BonusTokens { tokens: tokens(30) }))
        .await
        .unwrap();

    h.reply(&message(1, 10, "/start promo_WELCOME")).await;
    let calls = h.telegram.take_calls();
    assert!(
        calls[0].params["text"].as_str().unwrap().contains("WELCOME accepted"),
        "{calls:?}"
    );
    let view = h.store.user_view(user(10), vec![]).await.unwrap();
    assert_eq!(view.pending_promo.unwrap().code.as_str(), "WELCOME");
    assert!(view.user.is_some(), "registered in the same transaction");

    h.reply(&message(2, 11, "/start promo_GIFT")).await;
    assert_eq!(h.store.balance(user(11)).await.unwrap().0.available, tokens(30));
    h.reply(&message(3, 12, "/start promo_NOPE")).await;
    let calls = h.telegram.take_calls();
    assert!(
        calls.last().unwrap().params["text"]
            .as_str()
            .unwrap()
            .contains("no such promo code"),
        "{calls:?}"
    );

    h.reply(&message(4, 13, "/start ref_10")).await;
    assert_eq!(h.store.user(user(13)).await.unwrap().unwrap().referrer, Some(user(10)));
    h.reply(&message(5, 14, "/start ref_14")).await;
    assert_eq!(
        h.store.user(user(14)).await.unwrap().unwrap().referrer,
        None,
        "nobody refers themselves"
    );
}

#[tokio::test]
async fn every_command_answers() {
    let h = harness().await;
    h.reply(&message(1, 10, "/start")).await;
    let cases = [
        ("/balance", "Available: <b>0</b>"),
        ("/balance@TokenbillBot", "Available"),
        ("/buy", "Choose a pack"),
        ("/promo", "/promo WELCOME"),
        ("/promo nosuch", "no such promo code"),
        ("/subscription", "No subscription"),
        ("/history", "No transactions yet"),
        ("/language", "Choose a language"),
        ("/help", "/paysupport"),
        ("/paysupport", "@help_desk"),
        ("/stats", "did not understand"),
        ("/grant 10 5 nope", "did not understand"),
        ("/nonsense", "did not understand"),
        ("hello there", "did not understand"),
        ("/balance@SomeOtherBot", "did not understand"),
    ];
    for (index, (text, expected)) in cases.iter().enumerate() {
        let reply = h.reply(&message(10 + index as u32, 10, text)).await;
        assert!(text_of(&reply).contains(expected), "{text}: {}", text_of(&reply));
    }
    assert_eq!(
        h.store.balance(user(10)).await.unwrap().0.available,
        tokens(0),
        "a user cannot grant themselves"
    );
    let buy = h.reply(&message(40, 10, "/buy")).await;
    let labels: Vec<String> = buttons(&buy).into_iter().map(|(l, _)| l).collect();
    assert!(
        labels.iter().any(|l| l.contains("100 tokens — 99 ₽ · 50 ⭐")),
        "{labels:?}"
    );
}

#[tokio::test]
async fn operators_get_their_commands() {
    let h = harness().await;
    h.reply(&message(1, 10, "/start")).await;
    h.reply(&message(2, OPERATOR, "/start")).await;
    let granted = h.reply(&message(3, OPERATOR, "/grant 10 250 support gesture")).await;
    assert!(
        text_of(&granted).starts_with("granted 250 tokens to 10"),
        "{}",
        text_of(&granted)
    );
    // The same update again: granted once.
    assert_eq!(
        h.post(&message(3, OPERATOR, "/grant 10 250 support gesture")).await,
        (200, json!({}))
    );
    assert_eq!(h.store.balance(user(10)).await.unwrap().0.available, tokens(250));

    let shown = h.reply(&message(4, OPERATOR, "/user 10")).await;
    assert!(
        text_of(&shown).contains("available 250") && text_of(&shown).contains("@ann"),
        "{}",
        text_of(&shown)
    );
    let stats = h.reply(&message(5, OPERATOR, "/stats")).await;
    assert!(text_of(&stats).contains("users: 2"), "{}", text_of(&stats));
    assert!(text_of(&h.reply(&message(6, OPERATOR, "/grant 10 x")).await).starts_with("usage"));
    assert!(text_of(&h.reply(&message(7, OPERATOR, "/user 404")).await).contains("not found"));
}

#[tokio::test]
async fn buttons_navigate_by_editing_the_message() {
    let h = harness().await;
    h.reply(&message(1, 10, "/start")).await;
    let answer = h.reply(&callback(2, 10, "buy")).await;
    assert_eq!(answer["method"], "AnswerCallbackQuery");
    assert_eq!(answer["callback_query_id"], "cb2");
    let calls = h.telegram.take_calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].method, "editmessagetext");
    assert_eq!(calls[0].params["message_id"], 77);

    h.reply(&callback(3, 10, "t:pack_100")).await;
    let screen = h.telegram.take_calls().remove(0).params;
    assert!(text_of(&screen).contains("Total: <b>99 ₽</b>"), "{}", text_of(&screen));
    let pay = buttons(&screen)
        .into_iter()
        .find(|(_, data)| data.starts_with("p:"))
        .unwrap();
    assert_eq!(pay, ("Pay by card: 99 ₽".to_owned(), "p:mk:pack_100".to_owned()));

    h.reply(&callback(4, 10, "p:mk:pack_100")).await;
    let invoice = h.telegram.take_calls().remove(0).params;
    let (_, url) = buttons(&invoice)
        .into_iter()
        .find(|(_, url)| url.starts_with("http"))
        .unwrap();
    assert!(url.starts_with("http://pay.local/payments/mock/checkout/"), "{url}");
    let invoice_id = url.rsplit('/').next().unwrap().parse().unwrap();
    let stored = h.store.invoice(&invoice_id).await.unwrap().unwrap();
    assert_eq!((stored.user, stored.amount_due.to_minor()), (user(10), 9_900));

    // Language switch re-renders the menu in Russian.
    let answer = h.reply(&callback(5, 10, "l:ru")).await;
    assert_eq!(answer["text"], "Язык: русский.");
    assert!(text_of(&h.telegram.take_calls()[0].params).starts_with("Здравствуйте"));
    assert_eq!(h.store.user(user(10)).await.unwrap().unwrap().language, Language::Ru);
}

#[tokio::test]
async fn stale_or_forged_buttons_get_a_friendly_answer() {
    let h = harness().await;
    h.reply(&message(1, 10, "/start")).await;
    for (index, data) in ["zzz", "t:bad tariff", "p:xx:pack_100", &"m".repeat(70)]
        .iter()
        .enumerate()
    {
        let answer = h.reply(&callback(10 + index as u32, 10, data)).await;
        assert_eq!(answer["method"], "AnswerCallbackQuery");
        assert!(
            answer["text"].as_str().unwrap().contains("out of date"),
            "{data}: {answer}"
        );
    }
    let gone = h.reply(&callback(20, 10, "t:retired_pack")).await;
    assert!(gone["text"].as_str().unwrap().contains("no longer on sale"), "{gone}");
    assert!(h.telegram.calls().is_empty(), "no message was edited");
}

#[tokio::test]
async fn promo_entry_takes_the_next_message() {
    let h = harness().await;
    h.reply(&message(1, 10, "/start")).await;
    h.reply(&callback(2, 10, "promo")).await;
    assert!(text_of(&h.telegram.take_calls()[0].params).contains("Send the promo code"));
    let reply = h.reply(&message(3, 10, "nosuchcode")).await;
    assert!(text_of(&reply).contains("no such promo code"), "{}", text_of(&reply));
    let reply = h.reply(&message(4, 10, "again")).await;
    assert!(
        text_of(&reply).contains("did not understand"),
        "only the next message is the code"
    );
}

#[tokio::test]
async fn updates_with_nothing_to_do_are_acknowledged_without_effect() {
    let h = harness().await;
    let sticker = json!({ "update_id": 1, "message": {
        "message_id": 1, "date": 1_764_000_000, "chat": chat(10), "from": from(10, "en"),
        "sticker": { "file_id": "f", "file_unique_id": "u", "type": "regular", "width": 512, "height": 512,
                     "is_animated": false, "is_video": false }
    }});
    let no_text = json!({ "update_id": 2, "message": { "message_id": 2, "date": 1_764_000_000, "chat": chat(10), "from": from(10, "en") } });
    let mut edited = message(3, 10, "/start");
    edited["edited_message"] = edited["message"].take();
    edited["edited_message"]["edit_date"] = json!(1_764_000_100);
    edited.as_object_mut().unwrap().remove("message");
    let channel = json!({ "update_id": 4, "channel_post": {
        "message_id": 1, "date": 1_764_000_000, "chat": { "id": -100_123, "type": "channel", "title": "News" }, "text": "/start"
    }});
    let unknown = json!({ "update_id": 5, "future_kind": { "anything": true } });
    let malformed = json!({ "not": "an update" });
    for update in [sticker, no_text, edited, channel, unknown, malformed] {
        assert_eq!(h.post(&update).await, (200, json!({})), "{update}");
    }
    let raw = http::Request::builder()
        .method("POST")
        .header("X-Telegram-Bot-Api-Secret-Token", SECRET)
        .body("{{{".to_owned())
        .unwrap();
    assert_eq!(h.webhook.handle(raw).await.status(), 200);
    assert!(h.store.user(user(10)).await.unwrap().is_none());
    assert!(h.telegram.calls().is_empty());
}

#[tokio::test]
async fn blocking_and_unblocking_the_bot() {
    let h = harness().await;
    h.reply(&message(1, 10, "/start")).await;
    assert_eq!(h.post(&membership(2, 10, "kicked")).await, (200, json!({})));
    assert!(!h.store.user(user(10)).await.unwrap().unwrap().reachable);
    assert_eq!(h.post(&membership(3, 10, "member")).await, (200, json!({})));
    assert!(h.store.user(user(10)).await.unwrap().unwrap().reachable);
    // Someone the bot never met blocking it changes nothing.
    assert_eq!(h.post(&membership(4, 55, "kicked")).await, (200, json!({})));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redelivered_update_acts_once() {
    let h = harness().await;
    h.reply(&message(1, OPERATOR, "/start")).await;
    h.reply(&message(2, 10, "/start")).await;
    let grant = message(3, OPERATOR, "/grant 10 7 twice?");
    assert_eq!(h.post(&grant).await.0, 200);
    assert_eq!(
        h.post(&grant).await,
        (200, json!({})),
        "the second delivery does nothing"
    );

    let concurrent = message(4, OPERATOR, "/grant 10 11 twenty");
    let webhook = &h;
    let results = join_all((0..20).map(|_| async { webhook.post(&concurrent).await })).await;
    assert!(
        results.iter().all(|(status, _)| *status == 200 || *status == 503),
        "{results:?}"
    );
    assert_eq!(
        h.store.balance(user(10)).await.unwrap().0.available,
        tokens(18),
        "7 once + 11 once"
    );
    assert!(h.store.audit(user(10)).await.unwrap().is_ok());
}

#[tokio::test]
async fn dynamodb_failing_mid_update_asks_for_a_retry_that_completes() {
    let h = harness().await;
    h.reply(&message(1, OPERATOR, "/start")).await;
    h.reply(&message(2, 10, "/start")).await;
    let grant = message(3, OPERATOR, "/grant 10 40 retry me");
    // The claim succeeds; every attempt after it fails (the SDK retries 3 times).
    h.faults.fail_after(1, 3);
    let (status, _) = h.post(&grant).await;
    assert_eq!(status, 503, "a retry would complete the work");
    assert_eq!(h.store.balance(user(10)).await.unwrap().0.available, tokens(0));
    // Telegram redelivers: the work completes, once.
    assert_eq!(h.post(&grant).await.0, 200);
    assert_eq!(h.post(&grant).await, (200, json!({})));
    assert_eq!(h.store.balance(user(10)).await.unwrap().0.available, tokens(40));
}

#[tokio::test]
async fn a_telegram_failure_does_not_fail_the_update() {
    use tokenbill_dev::fake_telegram::Failure;
    let h = harness().await;
    h.reply(&message(1, 10, "/start")).await;
    h.telegram.fail_next([Failure::TooManyRequests { retry_after: 3 }]);
    // The edit goes out as a call and hits 429; the answer still comes back.
    let answer = h.reply(&callback(2, 10, "bal")).await;
    assert_eq!(answer["method"], "AnswerCallbackQuery");
    let calls: Vec<Call> = h.telegram.calls();
    assert_eq!(calls.len(), 1, "the failed edit was not retried within the update");
    // A blocked user: the edit fails with 403, the update is still done.
    h.telegram.fail_next([Failure::Blocked]);
    assert_eq!(h.reply(&callback(3, 10, "bal")).await["method"], "AnswerCallbackQuery");
    assert_eq!(
        h.post(&callback(3, 10, "bal")).await,
        (200, json!({})),
        "and not handled twice"
    );
}

/// DynamoDB requests per handled update, by screen: the figures in
/// docs/bot.md. Every one stays within the budget of three.
#[tokio::test]
async fn each_update_costs_at_most_three_dynamodb_requests() {
    let h = harness().await;
    for (text, effect) in [
        ("WELCOME", PromoEffect::PercentDiscount { percent: 10.into() }),
        ("GIFT", PromoEffect::BonusTokens { tokens: tokens(30) }),
        ("FREEPACK", PromoEffect::PercentDiscount { percent: 100.into() }),
        ("SPRING", PromoEffect::ExtraTokens { percent: 20 }),
    ] {
        h.store.create_promo(&promo(text, effect)).await.unwrap();
    }
    h.reply(&message(1, 10, "/start")).await;
    h.reply(&message(2, OPERATOR, "/start")).await;
    h.reply(&callback(3, 10, "buy")).await; // warms the catalog cache
    let cases: Vec<(&str, Value)> = vec![
        ("/start (returning user)", message(10, 10, "/start")),
        ("/balance", message(11, 10, "/balance")),
        ("/buy", message(12, 10, "/buy")),
        ("/promo CODE (unknown)", message(13, 10, "/promo NOSUCH")),
        ("/subscription", message(14, 10, "/subscription")),
        ("/history", message(15, 10, "/history")),
        ("/language", message(16, 10, "/language")),
        ("/help", message(17, 10, "/help")),
        ("/paysupport", message(18, 10, "/paysupport")),
        ("plain text", message(19, 10, "hi")),
        ("button: menu", callback(20, 10, "m")),
        ("button: balance", callback(21, 10, "bal")),
        ("button: tariff", callback(22, 10, "t:pack_100")),
        ("button: history", callback(23, 10, "h")),
        ("button: language", callback(24, 10, "l:en")),
        ("stale button", callback(25, 10, "zzz")),
        ("/promo CODE (discount)", message(27, 10, "/promo WELCOME")),
        ("button: tariff with the code", callback(28, 10, "t:pack_100")),
        ("button: pay (invoice)", callback(29, 10, "p:mk:pack_100")),
        ("/promo CODE (bonus tokens)", message(30, 10, "/promo GIFT")),
        ("/promo CODE (full discount)", message(31, 10, "/promo FREEPACK")),
        ("button: pay (free)", callback(32, 10, "p:mk:pack_100")),
        ("button: promo prompt", callback(33, 10, "promo")),
        ("promo code typed", message(34, 10, "SPRING")),
        ("/grant", message(35, OPERATOR, "/grant 10 5 thanks")),
        ("/user", message(36, OPERATOR, "/user 10")),
        ("/stats", message(37, OPERATOR, "/stats")),
        ("newcomer: /balance", message(38, 77, "/balance")),
        ("newcomer: button language", callback(39, 78, "l:ru")),
        ("newcomer: button pay", callback(40, 79, "p:mk:pack_100")),
        ("block", membership(41, 10, "kicked")),
        ("duplicate delivery", message(11, 10, "/balance")),
    ];
    let mut report = Vec::new();
    for (name, update) in cases {
        let before = h.faults.requests();
        h.post(&update).await;
        let used = h.faults.requests() - before;
        report.push(format!("{name}: {used}"));
        assert!(used <= 3, "{name} used {used} DynamoDB requests");
    }
    println!("{}", report.join("\n"));
    // The cheap paths did their work: 30 bonus + 100 free + 5 granted.
    assert_eq!(h.store.balance(user(10)).await.unwrap().0.available, tokens(135));
    assert!(h.store.audit(user(10)).await.unwrap().is_ok());
    let view = h.store.user_view(user(10), vec![]).await.unwrap();
    assert_eq!(
        view.pending_promo.map(|p| p.code.as_str().to_owned()).as_deref(),
        Some("SPRING"),
        "the typed code"
    );
    assert!(!view.user.unwrap().reachable, "blocked");
    assert_eq!(
        h.store.user(user(78)).await.unwrap().unwrap().language,
        Language::Ru,
        "newcomer registered with a language"
    );
    assert!(
        h.store.user(user(79)).await.unwrap().is_some(),
        "newcomer registered with the invoice"
    );
    assert_eq!(
        h.store
            .daily_stats(chrono::Utc::now().date_naive())
            .await
            .unwrap()
            .users_total,
        4
    );
}

/// Bot API failures are logged; the token in the request URL must not be.
#[tokio::test]
async fn bot_api_errors_do_not_reveal_the_token() {
    use teloxide_core::prelude::Requester;
    let bot = teloxide_core::Bot::new("123456:TOP-SECRET-TOKEN").set_api_url("http://127.0.0.1:1".parse().unwrap());
    let err = bot
        .send_message(teloxide_core::types::ChatId(1), "hi")
        .await
        .unwrap_err();
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains("TOP-SECRET-TOKEN"), "{shown}");
}

/// Buys pack_100 with Stars; returns the invoice payload Telegram got.
async fn stars_invoice(h: &Harness, update_id: u32, user: i64) -> String {
    h.post(&callback(update_id, user, "p:st:pack_100")).await;
    let calls = h.telegram.take_calls();
    let invoice = calls
        .iter()
        .find(|c| c.method == "sendinvoice")
        .unwrap_or_else(|| panic!("no sendInvoice: {calls:?}"));
    assert_eq!(invoice.params["currency"], "XTR");
    assert_eq!(invoice.params["prices"][0]["amount"], 50, "the catalog's Stars price");
    assert_eq!(invoice.params["chat_id"], user);
    invoice.params["payload"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn stars_pre_checkout_accepts_only_the_pending_invoice_at_its_price() {
    let h = harness().await;
    h.reply(&message(1, 20, "/start")).await;
    let payload = stars_invoice(&h, 2, 20).await;

    let answer = h.reply(&pre_checkout(3, 20, &payload, "XTR", 50)).await;
    assert!(
        answer["method"]
            .as_str()
            .unwrap()
            .eq_ignore_ascii_case("answerPreCheckoutQuery")
    );
    assert_eq!(answer["pre_checkout_query_id"], "pcq3");
    assert_eq!(answer["ok"], true, "{answer}");

    for (update_id, user, payload, currency, amount) in [
        (4, 20, payload.as_str(), "XTR", 49), // another amount
        (5, 20, payload.as_str(), "USD", 50), // another currency
        (6, 21, payload.as_str(), "XTR", 50), // someone else's invoice
        (7, 20, "not-an-invoice", "XTR", 50), // not ours
    ] {
        let answer = h.reply(&pre_checkout(update_id, user, payload, currency, amount)).await;
        assert_eq!(answer["ok"], false, "{answer}");
        assert!(
            !answer["error_message"].as_str().unwrap_or_default().is_empty(),
            "{answer}"
        );
    }
    assert_eq!(h.store.balance(user(20)).await.unwrap().0.available, tokens(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_duplicated_stars_payment_credits_once() {
    let h = harness().await;
    h.reply(&message(1, 22, "/start")).await;
    let payload = stars_invoice(&h, 2, 22).await;
    // Redeliveries of one update, and the same charge in other updates.
    let webhook = &h;
    let results = join_all((0..50u32).map(|i| {
        let update = successful_payment(if i % 2 == 0 { 3 } else { 100 + i }, 22, &payload, 50, "charge-1");
        async move { webhook.post(&update).await }
    }))
    .await;
    assert!(
        results.iter().all(|(status, _)| *status == 200 || *status == 503),
        "{results:?}"
    );
    // Telegram retries what answered 503; once more each settles it.
    for i in 0..50u32 {
        let update = successful_payment(if i % 2 == 0 { 3 } else { 100 + i }, 22, &payload, 50, "charge-1");
        let answer = h.post(&update).await;
        assert_eq!(answer.0, 200, "update {i}: {answer:?}");
    }
    assert_eq!(h.store.balance(user(22)).await.unwrap().0.available, tokens(100));
    assert!(h.store.audit(user(22)).await.unwrap().is_ok());
    let invoice = h
        .store
        .invoice(&tokenbill::domain::InvoiceId::new(&payload).unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(invoice.status, tokenbill::domain::invoice::InvoiceStatus::Paid);
    assert_eq!(invoice.provider_ref.as_deref(), Some("charge-1"));

    // A payment that does not match its invoice credits nothing more.
    let short = successful_payment(200, 22, &payload, 1, "charge-2");
    assert_eq!(h.post(&short).await.0, 200);
    assert_eq!(h.store.balance(user(22)).await.unwrap().0.available, tokens(100));
}

/// The last screen the bot drew by editing its message.
fn edited_screen(h: &Harness) -> Value {
    let calls = h.telegram.take_calls();
    let edit = calls
        .iter()
        .rev()
        .find(|call| call.method == "editmessagetext")
        .unwrap_or_else(|| panic!("no edit among {calls:?}"));
    edit.params.clone()
}

#[tokio::test]
async fn history_pages_with_older_and_newest_buttons() {
    let h = harness().await;
    h.reply(&message(1, 10, "/start")).await;
    for n in 0..25 {
        h.store
            .apply(tokenbill::store::BalanceRequest::credit(
                user(10),
                tokenbill::domain::ledger::CreditKind::Grant,
                tokens(n + 1),
                tokenbill_tests::key(format!("grant-{n}")),
            ))
            .await
            .unwrap();
    }
    let first = h.reply(&message(2, 10, "/history")).await;
    assert_eq!(text_of(&first).lines().filter(|l| l.contains("grant")).count(), 10);
    assert!(text_of(&first).contains("+25"), "newest first: {}", text_of(&first));
    let older: Vec<String> = buttons(&first)
        .into_iter()
        .filter_map(|(_, data)| data.starts_with("h:").then_some(data))
        .collect();
    assert_eq!(older.len(), 1, "only an Older button on the first page");

    h.reply(&callback(3, 10, &older[0])).await;
    let second = edited_screen(&h);
    assert!(
        text_of(&second).contains("+15") && !text_of(&second).contains("+25"),
        "{}",
        text_of(&second)
    );
    let nav: Vec<String> = buttons(&second).into_iter().map(|(_, data)| data).collect();
    assert!(nav.contains(&"h".to_owned()), "a Newest button: {nav:?}");
    let next = nav
        .iter()
        .find(|d| d.starts_with("h:"))
        .expect("an Older button")
        .clone();

    h.reply(&callback(4, 10, &next)).await;
    let last = edited_screen(&h);
    assert_eq!(text_of(&last).lines().filter(|l| l.contains("grant")).count(), 5);
    assert!(
        !buttons(&last).iter().any(|(_, d)| d.starts_with("h:")),
        "no Older button on the last page"
    );
}

#[tokio::test]
async fn auto_renewal_is_switched_after_a_confirmation() {
    use tokenbill::domain::subscription::{Subscription, SubscriptionStatus};
    let h = harness().await;
    h.reply(&message(1, 10, "/start")).await;
    let now = chrono::Utc::now();
    let subscription = Subscription {
        user: user(10),
        tariff_id: "sub_month".parse().unwrap(),
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
    let item = tokenbill::store::item::record(
        &tokenbill::store::keys::subscription(user(10)),
        "subscription",
        &subscription,
    )
    .unwrap();
    h.store
        .client()
        .put_item()
        .table_name(h.store.table())
        .set_item(Some(item))
        .send()
        .await
        .unwrap();

    let screen = h.reply(&message(2, 10, "/subscription")).await;
    assert!(
        text_of(&screen).contains("renews automatically"),
        "{}",
        text_of(&screen)
    );
    assert!(
        buttons(&screen).iter().any(|(_, d)| d == "ra:0"),
        "{:?}",
        buttons(&screen)
    );

    // Asking is not doing: the confirmation screen changes nothing.
    h.reply(&callback(3, 10, "ra:0")).await;
    let confirm = edited_screen(&h);
    assert!(
        text_of(&confirm).contains("Turn auto-renewal off?"),
        "{}",
        text_of(&confirm)
    );
    assert!(buttons(&confirm).iter().any(|(_, d)| d == "rs:0"));
    assert!(h.store.subscription(user(10)).await.unwrap().unwrap().auto_renew);

    h.reply(&callback(4, 10, "rs:0")).await;
    let off = edited_screen(&h);
    assert!(!h.store.subscription(user(10)).await.unwrap().unwrap().auto_renew);
    assert!(text_of(&off).contains("Auto-renewal is off"), "{}", text_of(&off));
    assert!(
        buttons(&off).iter().any(|(_, d)| d == "ra:1"),
        "now offers to turn it on"
    );

    h.reply(&callback(5, 10, "ra:1")).await;
    h.reply(&callback(6, 10, "rs:1")).await;
    assert!(h.store.subscription(user(10)).await.unwrap().unwrap().auto_renew);
}

#[tokio::test]
async fn operator_commands_are_unknown_to_everyone_else_and_every_provider_gets_a_button() {
    let h = harness().await;
    h.reply(&message(1, 10, "/start")).await;
    for (n, text) in ["/user 10", "/user", "/stats", "/grant 10 1 x"].iter().enumerate() {
        let reply = h.reply(&message(2 + n as u32, 10, text)).await;
        assert!(
            text_of(&reply).contains("did not understand"),
            "{text}: {}",
            text_of(&reply)
        );
        assert!(!text_of(&reply).contains("/user") && !text_of(&reply).contains("/grant"));
    }
    let help = h.reply(&message(9, 10, "/help")).await;
    assert!(
        !text_of(&help).contains("/stats") && !text_of(&help).contains("/grant"),
        "{}",
        text_of(&help)
    );

    h.reply(&callback(10, 10, "t:pack_100")).await;
    let screen = edited_screen(&h);
    let pays: Vec<String> = buttons(&screen)
        .into_iter()
        .filter_map(|(_, data)| data.starts_with("p:").then_some(data))
        .collect();
    assert_eq!(
        pays,
        vec!["p:mk:pack_100".to_owned(), "p:st:pack_100".to_owned()],
        "one per enabled provider"
    );
}

fn subscription_payment(update_id: u32, user: i64, payload: &str, charge: &str, first: bool, expires: i64) -> Value {
    let mut update = successful_payment(update_id, user, payload, 1000, charge);
    let payment = &mut update["message"]["successful_payment"];
    payment["is_recurring"] = json!(true);
    payment["is_first_recurring"] = json!(first);
    payment["subscription_expiration_date"] = json!(expires);
    update
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stars_subscription_is_sold_by_invoice_link_and_its_first_payment_credits_once() {
    use tokenbill::domain::invoice::InvoiceStatus;
    use tokenbill::domain::subscription::RenewalMethod;
    use tokenbill_dev::fake_telegram::Failure;

    let h = harness().await;
    h.reply(&message(1, 23, "/start")).await;

    // Telegram is throttling: nothing is stored, and Telegram's retry of
    // the update makes the link.
    h.telegram.fail_next([Failure::TooManyRequests { retry_after: 1 }]);
    let (status, _) = h.post(&callback(2, 23, "p:st:sub_month")).await;
    assert_eq!(status, 503, "retryable");
    let refused = h.telegram.take_calls();
    assert_eq!(refused.len(), 1, "{refused:?}");
    let lost = refused[0].params["payload"].as_str().unwrap();
    assert!(
        h.store
            .invoice(&tokenbill::domain::InvoiceId::new(lost).unwrap())
            .await
            .unwrap()
            .is_none(),
        "no invoice without its link"
    );

    let answer = h.reply(&callback(2, 23, "p:st:sub_month")).await;
    let calls = h.telegram.take_calls();
    assert!(calls.iter().all(|c| c.method != "sendinvoice"), "{calls:?}");
    let link_call = calls
        .iter()
        .find(|c| c.method == "createinvoicelink")
        .unwrap_or_else(|| panic!("no createInvoiceLink: {calls:?}"));
    let params = &link_call.params;
    assert_eq!(params["subscription_period"], 2_592_000);
    assert_eq!(params["currency"], "XTR");
    assert_eq!(params["prices"][0]["amount"], 1000, "the catalog's Stars price");
    let payload = params["payload"].as_str().unwrap().to_owned();
    // The invoice screen (edited in place; the button's answer is the
    // response) shows the link as its pay button.
    assert!(
        answer["method"]
            .as_str()
            .unwrap()
            .eq_ignore_ascii_case("answerCallbackQuery")
    );
    let screen = calls
        .iter()
        .find(|c| c.method == "editmessagetext")
        .unwrap_or_else(|| panic!("no invoice screen: {calls:?}"));
    let link = screen.params["reply_markup"]["inline_keyboard"][0][0]["url"]
        .as_str()
        .unwrap_or_default();
    assert!(link.starts_with("https://t.me/$"), "{screen:?}");
    let id = tokenbill::domain::InvoiceId::new(&payload).unwrap();
    let invoice = h.store.invoice(&id).await.unwrap().unwrap();
    assert!(invoice.recurring && invoice.status == InvoiceStatus::Pending);

    assert_eq!(h.reply(&pre_checkout(3, 23, &payload, "XTR", 1000)).await["ok"], true);
    // The first payment, delivered many times and in other updates.
    let expires = 1_767_000_000;
    let webhook = &h;
    let results = join_all((0..20u32).map(|i| {
        let update = subscription_payment(
            if i % 2 == 0 { 4 } else { 100 + i },
            23,
            &payload,
            "sub-charge-1",
            true,
            expires,
        );
        async move { webhook.post(&update).await }
    }))
    .await;
    assert!(
        results.iter().all(|(status, _)| *status == 200 || *status == 503),
        "{results:?}"
    );
    for i in 0..20u32 {
        let update = subscription_payment(
            if i % 2 == 0 { 4 } else { 100 + i },
            23,
            &payload,
            "sub-charge-1",
            true,
            expires,
        );
        assert_eq!(h.post(&update).await.0, 200);
    }
    assert_eq!(h.store.balance(user(23)).await.unwrap().0.available, tokens(3000));
    assert!(h.store.audit(user(23)).await.unwrap().is_ok());
    let paid = h.store.invoice(&id).await.unwrap().unwrap();
    assert_eq!(paid.status, InvoiceStatus::Paid);
    assert_eq!(paid.provider_ref.as_deref(), Some("sub-charge-1"));
    assert_eq!(
        paid.renewal,
        Some(RenewalMethod::TelegramStars {
            charge_id: "sub-charge-1".into(),
            expires_at: chrono::DateTime::from_timestamp(expires, 0),
        }),
        "saved for renewals"
    );

    let subscription = h.store.subscription(user(23)).await.unwrap().unwrap();
    assert_eq!((subscription.period, subscription.auto_renew), (1, true));

    // Telegram's renewal a month later names the first invoice: it gets an
    // invoice of its own and grants the next period once, however often
    // it is delivered (tests/subscriptions.rs follows the whole lifecycle).
    for update_id in [200, 200, 201] {
        let renewal = subscription_payment(update_id, 23, &payload, "sub-charge-2", false, expires + 2_592_000);
        assert_eq!(h.post(&renewal).await.0, 200);
    }
    assert_eq!(h.store.balance(user(23)).await.unwrap().0.available, tokens(6000));
    assert!(h.store.audit(user(23)).await.unwrap().is_ok());
    assert_eq!(
        h.store.invoice(&id).await.unwrap().unwrap().provider_ref.as_deref(),
        Some("sub-charge-1")
    );
    let renewed = h.store.subscription(user(23)).await.unwrap().unwrap();
    assert_eq!(renewed.period, 2);
    assert_eq!(renewed.period_end, subscription.period_end + chrono::Duration::days(30));
}

#[tokio::test]
async fn a_stars_subscriber_cancels_and_resumes_renewal_through_telegram() {
    use tokenbill::domain::subscription::{RenewalMethod, Subscription, SubscriptionStatus};
    use tokenbill_dev::fake_telegram::Failure;
    let h = harness().await;
    h.reply(&message(1, 11, "/start")).await;
    let now = chrono::Utc::now();
    // Past both reminders: what is next is the period's end.
    let end = now + chrono::Duration::hours(12);
    let subscription = Subscription {
        user: user(11),
        tariff_id: "sub_month".parse().unwrap(),
        status: SubscriptionStatus::Active,
        period: 1,
        period_start: now,
        period_end: end,
        period_days: 30,
        tokens_per_period: tokens(3000),
        auto_renew: true,
        renewal: Some(RenewalMethod::TelegramStars {
            charge_id: "stars-charge-1".into(),
            expires_at: Some(end),
        }),
        failed_attempts: 0,
        next_action_at: None,
    };
    let item = tokenbill::store::item::record(
        &tokenbill::store::keys::subscription(user(11)),
        "subscription",
        &subscription,
    )
    .unwrap();
    h.store
        .client()
        .put_item()
        .table_name(h.store.table())
        .set_item(Some(item))
        .send()
        .await
        .unwrap();
    let day = end.format("%Y-%m-%d").to_string();

    // The screen shows the status and the next renewal date.
    let screen = h.reply(&message(2, 11, "/subscription")).await;
    let text = text_of(&screen);
    assert!(text.contains("Status: active"), "{text}");
    assert!(text.contains(&format!("Next renewal: {day}")), "{text}");
    h.telegram.take_calls();

    // Telegram is throttling: nothing changes and the update is retried.
    h.telegram.fail_next([Failure::TooManyRequests { retry_after: 1 }]);
    assert_eq!(h.post(&callback(3, 11, "rs:0")).await.0, 503, "retryable");
    assert!(h.store.subscription(user(11)).await.unwrap().unwrap().auto_renew);
    h.telegram.take_calls();

    // Redelivered: Telegram cancels the renewal, then our flag follows.
    h.reply(&callback(3, 11, "rs:0")).await;
    let calls = h.telegram.take_calls();
    let edits: Vec<&Call> = calls
        .iter()
        .filter(|c| c.method == "edituserstarsubscription")
        .collect();
    assert_eq!(edits.len(), 1, "{calls:?}");
    assert_eq!(edits[0].params["user_id"], 11);
    assert_eq!(edits[0].params["telegram_payment_charge_id"], "stars-charge-1");
    assert_eq!(edits[0].params["is_canceled"], true);
    let cancelled = h.store.subscription(user(11)).await.unwrap().unwrap();
    assert!(!cancelled.auto_renew);
    // Nothing will renew it: it ends at the period's end, not after the
    // grace Telegram's renewal would get.
    let next_action = |sub: &Subscription| sub.next_action_at.map(|at| at.timestamp());
    assert_eq!(next_action(&cancelled), Some(end.timestamp()));
    let off = calls.iter().find(|c| c.method == "editmessagetext").unwrap();
    let text = off.params["text"].as_str().unwrap();
    assert!(text.contains(&format!("It ends on {day}")), "{text}");
    // The same update again does nothing more.
    assert_eq!(h.post(&callback(3, 11, "rs:0")).await, (200, json!({})));
    assert!(h.telegram.take_calls().is_empty());

    // Resuming re-enables it at Telegram.
    h.reply(&callback(4, 11, "rs:1")).await;
    let calls = h.telegram.take_calls();
    let edit = calls
        .iter()
        .find(|c| c.method == "edituserstarsubscription")
        .unwrap_or_else(|| panic!("{calls:?}"));
    assert_eq!(edit.params["is_canceled"], false);
    let resumed = h.store.subscription(user(11)).await.unwrap().unwrap();
    assert!(resumed.auto_renew);
    let grace = tokenbill::domain::subscription::STARS_GRACE;
    assert_eq!(next_action(&resumed), Some((end + grace).timestamp()));

    // Telegram refusing (not retryable): the flag stays, the user is told.
    h.telegram.fail_next([Failure::Blocked]);
    h.reply(&callback(5, 11, "rs:0")).await;
    assert!(h.store.subscription(user(11)).await.unwrap().unwrap().auto_renew);
    assert_eq!(h.post(&callback(5, 11, "rs:0")).await, (200, json!({})), "done once");
}
