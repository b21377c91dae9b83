//! Payments end to end against DynamoDB Local, moto's SQS and a fake Bot
//! API: the mock provider's callbacks and checkout, Telegram Stars through
//! the bot webhook, exactly-once crediting under concurrency and faults,
//! and the notifier that tells the user.

use chrono::Utc;
use futures::future::join_all;
use notifier::Notifier;
use payment_webhook::{PaymentConfig, PaymentWebhook};
use rust_decimal::Decimal;
use serde_json::Value;
use telegram_webhook::{BotConfig, Webhook};
use tokenbill::Store;
use tokenbill::domain::InvoiceId;
use tokenbill::domain::invoice::{Invoice, InvoiceStatus, Provider};
use tokenbill::domain::notification::{Delivery, NotificationId};
use tokenbill::domain::promo::{PromoCode, PromoCodeText, PromoEffect};
use tokenbill::domain::subscription::RenewalMethod;
use tokenbill::payments::mock::{CardBehaviour, MockCharge, MockEvent, MockEventKind, MockProvider, MockRecurring};
use tokenbill::payments::{ChargeError, ChargeOutcome, RecurringCharge, Renewals};
use tokenbill::queue::NotificationQueue;
use tokenbill::store::NewInvoice;
use tokenbill_dev::fake_telegram::{Failure, FakeTelegram};
use tokenbill_dev::poller::drain;
use tokenbill_tests::faults::{DynamoFaults, faulty_store};
use tokenbill_tests::{notification_queue, register, seed_catalog, serve_payments, sqs, tokens, unique_name, user};

const MOCK_SECRET: &str = "mock-secret-for-tests-0123";

struct Shop {
    store: Store,
    payments: PaymentWebhook,
    /// The same webhook over HTTP on loopback (the mock's recurring API).
    base: String,
    queue: NotificationQueue,
    notifier: Notifier,
    telegram: FakeTelegram,
    /// The fake Bot API's base URL.
    telegram_api: String,
    faults: DynamoFaults,
    sqs: aws_sdk_sqs::Client,
}

async fn shop() -> Shop {
    let faults = DynamoFaults::default();
    let store = faulty_store(&faults).await;
    seed_catalog(&store).await;
    let sqs = sqs().await;
    let url = notification_queue(&sqs, &unique_name("q")).await;
    let queue = NotificationQueue::new(sqs.clone(), url.clone());
    let config = PaymentConfig::from_lookup(|name| match name {
        "MOCK_PROVIDER_SECRET" => Some(MOCK_SECRET.into()),
        "TELEGRAM_BOT_USERNAME" => Some("TokenbillBot".into()),
        _ => None,
    })
    .unwrap();
    let telegram = FakeTelegram::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(telegram.clone().serve(listener));
    let bot = teloxide_core::Bot::new("123:TEST").set_api_url(api.parse().unwrap());
    let served = PaymentWebhook::new(store.clone(), queue.clone(), config.clone());
    Shop {
        base: serve_payments(std::sync::Arc::new(served)).await,
        telegram_api: api.clone(),
        payments: PaymentWebhook::new(store.clone(), queue.clone(), config),
        notifier: Notifier::new(store.clone(), bot, sqs.clone(), url),
        sqs,
        store,
        queue,
        telegram,
        faults,
    }
}

impl Shop {
    async fn invoice(&self, id: i64, provider: Provider) -> Invoice {
        self.invoice_of(id, provider, "pack_100").await
    }

    async fn invoice_of(&self, id: i64, provider: Provider, tariff: &str) -> Invoice {
        register(&self.store, id).await;
        let order = NewInvoice {
            user: user(id),
            tariff_id: tokenbill::domain::TariffId::new(tariff).unwrap(),
            provider,
            promo: None,
        };
        self.store
            .create_invoice(order, chrono::Duration::hours(1))
            .await
            .unwrap()
    }

    async fn request(&self, method: &str, uri: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, String) {
        let mut request = http::Request::builder().method(method).uri(uri);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = self.payments.handle(request.body(body.to_vec()).unwrap()).await;
        (response.status().as_u16(), response.body().clone())
    }

    async fn mock_callback(&self, header: &str, body: &[u8]) -> (u16, String) {
        self.request("POST", "/payments/mock/callback", &[("Mock-Signature", header)], body)
            .await
    }

    async fn available(&self, id: i64) -> u64 {
        self.store.balance(user(id)).await.unwrap().0.available.get()
    }

    /// Runs the notifier over everything queued; returns the messages sent.
    async fn deliver(&self) -> Vec<Value> {
        drain(&self.sqs, self.queue.url(), &self.notifier).await.unwrap();
        self.telegram
            .take_calls()
            .into_iter()
            .filter(|c| c.method == "sendmessage")
            .map(|c| c.params)
            .collect()
    }
}

fn event(invoice: &Invoice, kind: MockEventKind, amount: Decimal) -> MockEvent {
    MockEvent {
        event: kind,
        invoice_id: invoice.id.clone(),
        payment_id: format!("pay_{}", invoice.id),
        amount,
        currency: "RUB".into(),
        recurring: false,
        recurring_token: None,
    }
}

fn provider() -> MockProvider {
    MockProvider::new(MOCK_SECRET).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_mock_callbacks_credit_once_and_notify_once() {
    let shop = shop().await;
    let invoice = shop.invoice(1, Provider::Mock).await;
    let (header, body) = provider().callback(
        &event(&invoice, MockEventKind::Succeeded, invoice.amount_due.amount()),
        Utc::now(),
    );
    let answers = join_all((0..50).map(|_| shop.mock_callback(&header, &body))).await;
    for (status, body) in &answers {
        assert_eq!(*status, 200, "{body}");
        assert_eq!(serde_json::from_str::<Value>(body).unwrap()["status"], "credited");
    }
    assert_eq!(shop.available(1).await, 100);
    assert!(shop.store.audit(user(1)).await.unwrap().is_ok());
    let paid = shop.store.invoice(&invoice.id).await.unwrap().unwrap();
    assert_eq!(paid.status, InvoiceStatus::Paid);
    assert_eq!(
        paid.provider_ref.as_deref(),
        Some(format!("pay_{}", invoice.id).as_str())
    );

    let sent = shop.deliver().await;
    assert_eq!(
        sent.len(),
        1,
        "one message for one payment, however often it was reported: {sent:?}"
    );
    assert_eq!(sent[0]["chat_id"], 1);
    let text = sent[0]["text"].as_str().unwrap();
    assert!(text.contains("100") && text.contains("99 ₽"), "{text}");
    let notification = shop
        .store
        .notification(&NotificationId::payment(&invoice.id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(notification.delivery, Delivery::Sent);
}

#[tokio::test]
async fn forged_stale_and_mismatched_mock_callbacks_credit_nothing() {
    let shop = shop().await;
    let invoice = shop.invoice(2, Provider::Mock).await;
    let due = invoice.amount_due.amount();
    let now = Utc::now();

    let forger = MockProvider::new("not-the-shared-secret!!").unwrap();
    let (header, body) = forger.callback(&event(&invoice, MockEventKind::Succeeded, due), now);
    let (status, answer) = shop.mock_callback(&header, &body).await;
    assert_eq!(status, 401);
    assert_eq!(
        serde_json::from_str::<Value>(&answer).unwrap()["error"]["code"],
        "bad_signature"
    );

    let (header, body) = provider().callback(
        &event(&invoice, MockEventKind::Succeeded, due),
        now - chrono::Duration::minutes(10),
    );
    assert_eq!(
        shop.mock_callback(&header, &body).await.0,
        401,
        "outside the replay window"
    );

    assert_eq!(shop.mock_callback("", &body).await.0, 401, "no signature");

    let (header, body) = provider().callback(&event(&invoice, MockEventKind::Succeeded, due - Decimal::ONE), now);
    let (status, answer) = shop.mock_callback(&header, &body).await;
    assert_eq!(status, 409, "{answer}");
    assert_eq!(
        serde_json::from_str::<Value>(&answer).unwrap()["error"]["code"],
        "payment_mismatch"
    );

    let mut unknown = event(&invoice, MockEventKind::Succeeded, due);
    unknown.invoice_id = InvoiceId::new("nosuchinvoice").unwrap();
    let (header, body) = provider().callback(&unknown, now);
    assert_eq!(shop.mock_callback(&header, &body).await.0, 404);

    let (header, _) = provider().callback(&event(&invoice, MockEventKind::Succeeded, due), now);
    assert_eq!(
        shop.mock_callback(&header, b"{not json").await.0,
        401,
        "the signature covers the exact body"
    );

    assert_eq!(shop.available(2).await, 0);
    let still = shop.store.invoice(&invoice.id).await.unwrap().unwrap();
    assert_eq!(still.status, InvoiceStatus::Pending);
    assert!(shop.deliver().await.is_empty());
}

#[tokio::test]
async fn the_checkout_page_pays_and_declines() {
    let shop = shop().await;
    let declined = shop.invoice(3, Provider::Mock).await;
    let uri = format!("/payments/mock/checkout/{}", declined.id);
    let (status, page) = shop.request("GET", &uri, &[], b"").await;
    assert_eq!(status, 200);
    assert!(
        page.contains("99 ₽") && page.contains("id=\"pay\"") && page.contains("100 tokens"),
        "{page}"
    );

    let form = [("Content-Type", "application/x-www-form-urlencoded")];
    let (status, page) = shop.request("POST", &uri, &form, b"action=decline").await;
    assert_eq!(status, 200);
    assert!(page.contains("declined"), "{page}");
    assert_eq!(shop.available(3).await, 0);
    let sent = shop.deliver().await;
    assert_eq!(sent.len(), 1);
    assert!(
        sent[0]["text"].as_str().unwrap().contains("did not go through")
            || sent[0]["text"].as_str().unwrap().contains("не прошла")
    );

    // Declined is not final: the same invoice can still be paid.
    let (status, page) = shop.request("POST", &uri, &form, b"action=pay").await;
    assert_eq!(status, 200, "{page}");
    assert!(
        page.contains("succeeded") && page.contains("https://t.me/TokenbillBot"),
        "{page}"
    );
    assert_eq!(shop.available(3).await, 100);
    // Paying twice pays once.
    shop.request("POST", &uri, &form, b"action=pay").await;
    assert_eq!(shop.available(3).await, 100);
    assert_eq!(shop.deliver().await.len(), 1);
    let (_, page) = shop.request("GET", &uri, &[], b"").await;
    assert!(page.contains("Already paid"), "{page}");

    assert_eq!(shop.request("POST", &uri, &form, b"action=steal").await.0, 400);

    // A cancelled invoice is not offered, and Pay does nothing.
    let cancelled = shop.invoice(4, Provider::Mock).await;
    shop.store.cancel_invoice(&cancelled.id, user(4)).await.unwrap();
    let uri = format!("/payments/mock/checkout/{}", cancelled.id);
    let (_, page) = shop.request("GET", &uri, &[], b"").await;
    assert!(page.contains("Not payable") && !page.contains("id=\"pay\""), "{page}");
    let (_, page) = shop.request("POST", &uri, &form, b"action=pay").await;
    assert!(page.contains("Not payable"), "{page}");
    assert_eq!(shop.available(4).await, 0);
    assert_eq!(
        shop.request("GET", "/payments/mock/checkout/nosuch", &[], b"").await.0,
        404
    );
    assert_eq!(shop.request("GET", "/payments/elsewhere", &[], b"").await.0, 404);
    let huge = vec![b'a'; payment_webhook::MAX_BODY + 1];
    assert_eq!(shop.request("POST", "/payments/mock/callback", &[], &huge).await.0, 413);
}

#[tokio::test]
async fn dynamodb_failing_mid_payment_is_retried_by_the_provider_and_completes_once() {
    let shop = shop().await;
    let invoice = shop.invoice(4, Provider::Mock).await;
    let (header, body) = provider().callback(
        &event(&invoice, MockEventKind::Succeeded, invoice.amount_due.amount()),
        Utc::now(),
    );
    // The invoice read succeeds; the transaction (and the SDK's own retries) fail.
    shop.faults.fail_after(1, 3);
    let (status, answer) = shop.mock_callback(&header, &body).await;
    assert_eq!(status, 503, "{answer}");
    assert_eq!(
        serde_json::from_str::<Value>(&answer).unwrap()["error"]["code"],
        "unavailable"
    );
    assert_eq!(shop.available(4).await, 0);
    // The provider retries: the payment completes, once.
    assert_eq!(shop.mock_callback(&header, &body).await.0, 200);
    assert_eq!(shop.mock_callback(&header, &body).await.0, 200);
    assert_eq!(shop.available(4).await, 100);
    assert!(shop.store.audit(user(4)).await.unwrap().is_ok());
    assert_eq!(shop.deliver().await.len(), 1, "one notification arrives");
}

#[tokio::test]
async fn the_notifier_waits_on_429_and_gives_up_on_blocked_users() {
    let shop = shop().await;
    let slow = shop.invoice(5, Provider::Mock).await;
    let blocked = shop.invoice(6, Provider::Mock).await;
    for invoice in [&slow, &blocked] {
        shop.store.pay_invoice(&invoice.id, None).await.unwrap();
    }
    // Telegram throttles the first send; the user of the second blocked the bot.
    shop.telegram.fail_next([Failure::TooManyRequests { retry_after: 1 }]);
    shop.queue.publish(&[NotificationId::payment(&slow.id)]).await.unwrap();
    let polled = drain(&shop.sqs, shop.queue.url(), &shop.notifier).await.unwrap();
    assert_eq!((polled.received, polled.failed), (1, 1), "throttled: back to the queue");
    assert_eq!(shop.telegram.take_calls().len(), 1, "one attempt, refused");
    let waiting = shop
        .store
        .notification(&NotificationId::payment(&slow.id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(waiting.delivery, Delivery::Pending);
    // After retry_after the message is visible again and goes out.
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    let sent = shop.deliver().await;
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0]["chat_id"], 5);

    shop.telegram.fail_next([Failure::Blocked]);
    shop.queue
        .publish(&[NotificationId::payment(&blocked.id)])
        .await
        .unwrap();
    let polled = drain(&shop.sqs, shop.queue.url(), &shop.notifier).await.unwrap();
    assert_eq!(
        (polled.received, polled.failed),
        (1, 0),
        "a blocked user's message is not retried"
    );
    assert_eq!(shop.telegram.take_calls().len(), 1, "one attempt, refused");
    let dropped = shop
        .store
        .notification(&NotificationId::payment(&blocked.id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(dropped.delivery, Delivery::Dropped);
    assert!(
        !shop.store.user(user(6)).await.unwrap().unwrap().reachable,
        "marked unreachable"
    );
    // Published again (say by the outbox sweep): nothing more is sent.
    shop.queue
        .publish(&[NotificationId::payment(&blocked.id)])
        .await
        .unwrap();
    assert!(shop.deliver().await.is_empty());
}

#[tokio::test]
async fn the_sweep_expires_unpaid_invoices_and_publishes_what_never_reached_the_queue() {
    use tokenbill::sweep::{SweepReport, sweep};
    let shop = shop().await;
    let clock = std::sync::Arc::new(tokenbill::ManualClock::new(Utc::now()));
    let store = shop.store.clone().with_clock(clock.clone());
    let paid = shop.invoice(7, Provider::Mock).await;
    let unpaid = shop.invoice(8, Provider::Mock).await;
    // Paid, but the process died before publishing.
    store.pay_invoice(&paid.id, None).await.unwrap();
    assert_eq!(
        sweep(&store, &shop.queue, &Renewals::default()).await.unwrap(),
        SweepReport::default(),
        "nothing due yet"
    );

    clock.advance(tokenbill::store::REPUBLISH_AFTER + chrono::Duration::seconds(1));
    let report = sweep(&store, &shop.queue, &Renewals::default()).await.unwrap();
    assert_eq!(report.notifications_republished, 1);
    assert_eq!(report.invoices_expired, 0, "the unpaid one has an hour");
    assert_eq!(shop.deliver().await.len(), 1);

    clock.advance(chrono::Duration::hours(1));
    let report = sweep(&store, &shop.queue, &Renewals::default()).await.unwrap();
    assert_eq!(
        report,
        SweepReport {
            invoices_expired: 1,
            holds_released: 0,
            notifications_republished: 0,
            ..SweepReport::default()
        },
        "delivered notifications leave the outbox"
    );
    let statuses = [
        store.invoice(&paid.id).await.unwrap().unwrap().status,
        store.invoice(&unpaid.id).await.unwrap().unwrap().status,
    ];
    assert_eq!(statuses, [InvoiceStatus::Paid, InvoiceStatus::Expired]);
    assert_eq!(
        sweep(&store, &shop.queue, &Renewals::default()).await.unwrap(),
        SweepReport::default(),
        "repeatable"
    );
}

/// What `make dev` serves: the checkout page over HTTP declines and pays,
/// and the background poller delivers the notification to (fake) Telegram.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dev_runner_pays_through_the_checkout_page_and_notifies() {
    let store = tokenbill_tests::fresh_store().await;
    seed_catalog(&store).await;
    let app = tokenbill_dev::local_app(
        store.clone(),
        sqs().await,
        &unique_name("dev"),
        "http://127.0.0.1".into(),
    )
    .await
    .unwrap();
    let telegram = app.telegram.clone().expect("no bot token in tests: a fake Telegram");
    let background = app.spawn_background();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(tokenbill_dev::serve(listener, app.state, std::future::pending()));

    register(&store, 9).await;
    let order = |provider| NewInvoice {
        user: user(9),
        tariff_id: tokenbill::domain::TariffId::new("pack_100").unwrap(),
        provider,
        promo: None,
    };
    let declined = store
        .create_invoice(order(Provider::Mock), chrono::Duration::hours(1))
        .await
        .unwrap();
    let paid = store
        .create_invoice(order(Provider::Mock), chrono::Duration::hours(1))
        .await
        .unwrap();
    let client = reqwest::Client::new();
    let checkout = |id: &InvoiceId| format!("http://{addr}/payments/mock/checkout/{id}");

    let page = client.get(checkout(&paid.id)).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("id=\"pay\""));

    let answer = client
        .post(checkout(&declined.id))
        .form(&[("action", "decline")])
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert!(answer.text().await.unwrap().contains("declined"));
    let answer = client
        .post(checkout(&paid.id))
        .form(&[("action", "pay")])
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert!(answer.text().await.unwrap().contains("succeeded"));

    assert_eq!(store.balance(user(9)).await.unwrap().0.available.get(), 100);
    let statuses = [
        store.invoice(&declined.id).await.unwrap().unwrap().status,
        store.invoice(&paid.id).await.unwrap().unwrap().status,
    ];
    assert_eq!(
        statuses,
        [InvoiceStatus::Pending, InvoiceStatus::Paid],
        "declined stays payable"
    );

    // The poller hands the queued notifications to the notifier.
    let mut texts = Vec::new();
    for _ in 0..100 {
        texts.extend(
            telegram
                .take_calls()
                .into_iter()
                .filter(|c| c.method == "sendmessage")
                .map(|c| c.params["text"].as_str().unwrap_or_default().to_owned()),
        );
        if texts.len() >= 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let declined_notice = store
        .notification(&NotificationId::payment_declined(&declined.id))
        .await
        .unwrap();
    assert_eq!(texts.len(), 2, "{texts:?} {declined_notice:?}");
    assert!(
        texts.iter().any(|t| t.contains("100")),
        "the payment notice names the tokens: {texts:?}"
    );
    drop(background);
    server.abort();
}

/// The saved card's recurring token on a paid invoice.
fn saved_token(invoice: &Invoice) -> RenewalMethod {
    match &invoice.renewal {
        Some(method @ RenewalMethod::Mock { .. }) => method.clone(),
        other => panic!("no saved mock card: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_card_saved_at_checkout_is_charged_again_once_and_as_minted() {
    let shop = shop().await;
    // A subscription's checkout offers to save the card, ticked.
    let first = shop.invoice_of(30, Provider::Mock, "sub_month").await;
    assert!(first.recurring, "a subscription's first payment keeps the card");
    let uri = format!("/payments/mock/checkout/{}", first.id);
    let (_, page) = shop.request("GET", &uri, &[], b"").await;
    assert!(page.contains("name=\"save_card\" value=\"1\" checked"), "{page}");
    let pack = shop.invoice(31, Provider::Mock).await;
    let (_, page) = shop
        .request("GET", &format!("/payments/mock/checkout/{}", pack.id), &[], b"")
        .await;
    assert!(!page.contains(" checked"), "a pack does not save the card by default");

    let form = [("Content-Type", "application/x-www-form-urlencoded")];
    let (status, page) = shop
        .request("POST", &uri, &form, b"action=pay&save_card=1&card=approve")
        .await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("saved for renewals"), "{page}");
    let paid = shop.store.invoice(&first.id).await.unwrap().unwrap();
    assert_eq!(paid.status, InvoiceStatus::Paid);
    let method = saved_token(&paid);
    let RenewalMethod::Mock { recurring_token } = &method else {
        unreachable!()
    };
    assert!(recurring_token.starts_with("mtok_approve_"), "{recurring_token}");
    assert_eq!(shop.available(30).await, 3000);

    // The renewal: the saved card charged for a new invoice, 20 times at once.
    let recurring = MockRecurring::new(provider(), &shop.base, reqwest::Client::new()).unwrap();
    let renewal = shop.invoice(30, Provider::Mock).await;
    let outcomes = join_all((0..20).map(|_| recurring.charge_again(&method, &renewal))).await;
    let paid_ref = format!("mock_rec_{}", renewal.id);
    for outcome in outcomes {
        assert_eq!(
            outcome.unwrap(),
            ChargeOutcome::Paid {
                provider_ref: paid_ref.clone()
            }
        );
    }
    assert_eq!(shop.available(30).await, 3100, "credited once");
    assert!(shop.store.audit(user(30)).await.unwrap().is_ok());
    let renewed = shop.store.invoice(&renewal.id).await.unwrap().unwrap();
    assert_eq!(
        (renewed.status, renewed.provider_ref.as_deref()),
        (InvoiceStatus::Paid, Some(paid_ref.as_str()))
    );
    let sent = shop.deliver().await;
    assert_eq!(sent.len(), 2, "the first payment and the renewal, once each: {sent:?}");

    // Through the dispatcher too; Stars and unconfigured providers cannot be charged.
    let renewals = Renewals {
        mock: Some(recurring.clone()),
        robokassa: None,
    };
    assert!(matches!(
        renewals.charge_again(&method, &renewal).await,
        Ok(ChargeOutcome::Paid { .. })
    ));
    let stars = RenewalMethod::TelegramStars {
        charge_id: "c".into(),
        expires_at: None,
    };
    assert!(matches!(
        renewals.charge_again(&stars, &renewal).await,
        Err(ChargeError::NotChargeable { .. })
    ));
    let robokassa = RenewalMethod::Robokassa { parent_inv_id: 1 };
    assert!(matches!(
        renewals.charge_again(&robokassa, &renewal).await,
        Err(ChargeError::NotChargeable { .. })
    ));
    // A mock card does not pay another provider's invoice.
    let elsewhere = shop.invoice(30, Provider::Robokassa).await;
    let wrong = recurring.charge_again(&method, &elsewhere).await;
    assert!(matches!(wrong, Err(ChargeError::Invoice { .. })), "{wrong:?}");
    assert_eq!(shop.available(30).await, 3100);
}

#[tokio::test]
async fn renewals_decline_or_fail_on_purpose_and_credit_nothing() {
    let shop = shop().await;
    let recurring = MockRecurring::new(provider(), &shop.base, reqwest::Client::new()).unwrap();
    let invoice = shop.invoice(32, Provider::Mock).await;
    let card = |behaviour| RenewalMethod::Mock {
        recurring_token: provider().mint_token(user(32), behaviour),
    };

    let declined = recurring.charge_again(&card(CardBehaviour::Decline), &invoice).await;
    assert_eq!(
        declined.unwrap(),
        ChargeOutcome::Declined {
            reason: "card declined".into()
        }
    );
    let down = recurring
        .charge_again(&card(CardBehaviour::Unavailable), &invoice)
        .await
        .unwrap();
    assert!(matches!(down, ChargeOutcome::Unavailable { .. }), "{down:?}");
    // Another customer's card, and a token the provider never minted.
    let bobs = RenewalMethod::Mock {
        recurring_token: provider().mint_token(user(33), CardBehaviour::Approve),
    };
    let forged = RenewalMethod::Mock {
        recurring_token: "mtok_approve_0_00".into(),
    };
    for method in [bobs, forged] {
        assert_eq!(
            recurring.charge_again(&method, &invoice).await.unwrap(),
            ChargeOutcome::Declined {
                reason: "unknown card".into()
            }
        );
    }
    // A client with another secret is refused by the provider (401).
    let stranger = MockRecurring::new(
        MockProvider::new("not-the-shared-secret!!").unwrap(),
        &shop.base,
        reqwest::Client::new(),
    )
    .unwrap();
    let refused = stranger.charge_again(&card(CardBehaviour::Approve), &invoice).await;
    assert!(matches!(refused, Err(ChargeError::Refused(_))), "{refused:?}");
    // A provider that cannot be reached: retryable.
    let nowhere = MockRecurring::new(provider(), "http://127.0.0.1:1", reqwest::Client::new()).unwrap();
    let unreachable = nowhere
        .charge_again(&card(CardBehaviour::Approve), &invoice)
        .await
        .unwrap();
    assert!(
        matches!(unreachable, ChargeOutcome::Unavailable { .. }),
        "{unreachable:?}"
    );
    // A charge for another amount than the invoice's (signed by hand): 409.
    let charge = MockCharge {
        invoice_id: invoice.id.clone(),
        recurring_token: provider().mint_token(user(32), CardBehaviour::Approve),
        amount: invoice.amount_due.amount() - Decimal::ONE,
        currency: "RUB".into(),
    };
    let body = serde_json::to_vec(&charge).unwrap();
    let header = provider().sign(&body, Utc::now());
    let (status, answer) = shop
        .request(
            "POST",
            "/payments/mock/recurring",
            &[("Mock-Signature", &header)],
            &body,
        )
        .await;
    assert_eq!(status, 409, "{answer}");

    assert_eq!(shop.available(32).await, 0);
    let still = shop.store.invoice(&invoice.id).await.unwrap().unwrap();
    assert_eq!(still.status, InvoiceStatus::Pending, "still payable");
    assert!(
        shop.deliver().await.is_empty(),
        "a failed renewal tells the user nothing here"
    );

    // DynamoDB failing mid-charge: unavailable, and the retry pays once.
    let approve = card(CardBehaviour::Approve);
    // Two reads succeed (the route's, the payment's); the transaction fails.
    shop.faults.fail_after(2, 3);
    let failed = recurring.charge_again(&approve, &invoice).await.unwrap();
    assert!(matches!(failed, ChargeOutcome::Unavailable { .. }), "{failed:?}");
    assert_eq!(shop.available(32).await, 0);
    for _ in 0..2 {
        assert!(matches!(
            recurring.charge_again(&approve, &invoice).await.unwrap(),
            ChargeOutcome::Paid { .. }
        ));
    }
    assert_eq!(shop.available(32).await, 100);
    assert!(shop.store.audit(user(32)).await.unwrap().is_ok());
    assert_eq!(shop.deliver().await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_promo_bonus_is_announced_once_however_often_it_is_activated() {
    let shop = shop().await;
    let code = PromoCodeText::new("GIFT50").unwrap();
    let gift = PromoCode::new(code.clone(), PromoEffect::BonusTokens { tokens: tokens(50) });
    shop.store.create_promo(&gift).await.unwrap();
    let config = BotConfig {
        webhook_secret: "bot-secret".into(),
        bot_username: None,
        operators: Vec::new(),
        support_contact: "@help".into(),
        providers: vec![Provider::Mock],
        public_base_url: shop.base.clone(),
        invoice_ttl: chrono::Duration::hours(1),
    };
    let bot = teloxide_core::Bot::new("123:TEST").set_api_url(shop.telegram_api.parse().unwrap());
    let webhook = Webhook::new(shop.store.clone(), bot, config).with_queue(shop.queue.clone());
    let update = |update_id: u32| {
        serde_json::json!({ "update_id": update_id, "message": {
            "message_id": update_id, "date": 1_764_000_000,
            "chat": { "id": 40, "type": "private", "first_name": "Ann" },
            "from": { "id": 40, "is_bot": false, "first_name": "Ann", "language_code": "en" },
            "text": "/promo GIFT50"
        }})
        .to_string()
    };
    let post = |body: String| {
        let webhook = &webhook;
        async move {
            let request = http::Request::builder()
                .method("POST")
                .uri("/telegram/webhook")
                .header("X-Telegram-Bot-Api-Secret-Token", "bot-secret")
                .body(body)
                .unwrap();
            webhook.handle(request).await.status().as_u16()
        }
    };
    // Telegram redelivers the update (some at once), and the user sends it again.
    let statuses = join_all((0..10).map(|_| post(update(1)))).await;
    assert!(statuses.iter().all(|s| *s == 200 || *s == 503), "{statuses:?}");
    assert_eq!(post(update(1)).await, 200);
    assert_eq!(post(update(2)).await, 200);
    // Racing activations of the same use in the store (a replay that got
    // past the update's claim) commit once.
    let ann = shop.store.user(user(40)).await.unwrap().unwrap();
    let raced = join_all((0..5).map(|_| shop.store.activate_checked_promo(&ann, &gift, 0, Vec::new(), false))).await;
    for activation in raced {
        let activation = activation.unwrap();
        assert!(activation.applied.replayed);
        assert_eq!(activation.notification, NotificationId::promo_bonus(user(40), &code, 1));
    }
    assert_eq!(shop.available(40).await, 50);
    assert!(shop.store.audit(user(40)).await.unwrap().is_ok());

    let sent = shop.deliver().await;
    let bonus: Vec<&str> = sent
        .iter()
        .filter_map(|m| m["text"].as_str())
        .filter(|text| text.contains("GIFT50"))
        .collect();
    assert_eq!(bonus.len(), 1, "{sent:?}");
    assert!(
        bonus[0].contains("+50 tokens") && bonus[0].contains("<b>50</b>"),
        "{}",
        bonus[0]
    );
    // The sweep finds nothing left to republish.
    let notification = shop
        .store
        .notification(&NotificationId::promo_bonus(user(40), &code, 1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(notification.delivery, Delivery::Sent);
    assert_eq!(
        tokenbill::queue::republish_undelivered(&shop.store, &shop.queue)
            .await
            .unwrap(),
        0
    );
}
