//! Robokassa against the fake Robokassa on loopback. First the protocol
//! alone (payment URL, ResultURL callbacks, recurring charges, `OpStateExt`,
//! no storage); then the payment-webhook routes end to end against
//! DynamoDB Local and moto's SQS: exactly-once crediting under concurrent
//! callbacks, refused forgeries, late payments, DynamoDB failures, the
//! browser's redirect flow and the admin CLI's `payments check`.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::State;
use rust_decimal::Decimal;
use tokenbill::payments::robokassa::{
    self, HashAlgorithm, PaymentRequest, RecurringAccepted, RecurringRequest, ResultCallback, RobokassaConfig,
    RobokassaError,
};
use tokenbill_dev::fake_robokassa::{FakeRobokassa, RecurringOutcome};
use tokio::sync::mpsc;

const RUB_100: Decimal = Decimal::ONE_HUNDRED;

fn config(is_test: bool, algorithm: HashAlgorithm) -> RobokassaConfig {
    let (password1, password2) = if is_test {
        ("test-one", "test-two")
    } else {
        ("live-one", "live-two")
    };
    RobokassaConfig {
        merchant_login: "tokenbill-test".to_owned(),
        password1: password1.to_owned(),
        password2: password2.to_owned(),
        is_test,
        algorithm,
        base_url: robokassa::DEFAULT_BASE_URL.to_owned(),
        culture: None,
    }
}

fn shp(invoice: &str) -> BTreeMap<String, String> {
    BTreeMap::from([("Shp_invoice".to_owned(), invoice.to_owned())])
}

/// A shop's ResultURL: verifies each callback the way the payment webhook
/// must, answers `OK{InvId}`, and passes verified callbacks to the test.
async fn start_shop(config: RobokassaConfig) -> (String, mpsc::UnboundedReceiver<ResultCallback>) {
    async fn result(
        State((config, sender)): State<(RobokassaConfig, mpsc::UnboundedSender<ResultCallback>)>,
        body: String,
    ) -> (axum::http::StatusCode, String) {
        let verified = ResultCallback::parse(&body).and_then(|callback| {
            robokassa::verify_result(&config, &callback)?;
            callback.check_amount(10_000)?;
            Ok(callback)
        });
        match verified {
            Ok(callback) => {
                let answer = robokassa::ok_answer(callback.inv_id);
                sender.send(callback).expect("test listens");
                (axum::http::StatusCode::OK, answer)
            }
            Err(err) => (axum::http::StatusCode::BAD_REQUEST, err.to_string()),
        }
    }
    let (sender, receiver) = mpsc::unbounded_channel();
    let router = axum::Router::new()
        .route("/payments/robokassa/result", axum::routing::post(result))
        .with_state((config, sender));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind shop");
    let url = format!(
        "http://{}/payments/robokassa/result",
        listener.local_addr().expect("shop address")
    );
    tokio::spawn(async move { axum::serve(listener, router).await });
    (url, receiver)
}

struct World {
    config: RobokassaConfig,
    fake: FakeRobokassa,
    http: reqwest::Client,
    callbacks: mpsc::UnboundedReceiver<ResultCallback>,
}

async fn world(is_test: bool, algorithm: HashAlgorithm) -> World {
    let mut config = config(is_test, algorithm);
    let fake = FakeRobokassa::new(config.clone());
    config.base_url = fake.start().await.expect("start fake Robokassa");
    let (result_url, callbacks) = start_shop(config.clone()).await;
    fake.set_result_url(result_url);
    World {
        config,
        fake,
        http: reqwest::Client::new(),
        callbacks,
    }
}

impl World {
    /// Opens the payment URL for `inv_id` and lets the fake pay it.
    async fn pay_first_payment(&mut self, inv_id: u32, recurring: bool) {
        let request = PaymentRequest {
            inv_id,
            out_sum: RUB_100,
            description: "100 tokens".to_owned(),
            shp: shp(&format!("inv-{inv_id}")),
            receipt: Some(
                serde_json::json!({ "items": [{ "name": "100 токенов", "quantity": 1, "sum": 100, "tax": "none" }] }),
            ),
            recurring,
            email: None,
            culture: Some("ru".to_owned()),
        };
        let url = robokassa::payment_url(&self.config, &request).expect("payment URL");
        let page = self.http.get(url).send().await.expect("open payment page");
        assert!(page.status().is_success(), "{}", page.text().await.unwrap_or_default());
        assert_eq!(self.fake.pay(inv_id).await, Ok(format!("OK{inv_id}")));
        let callback = self.next_callback().await;
        assert_eq!(callback.inv_id, inv_id);
        assert_eq!(callback.out_sum_raw, "100.000000");
        assert_eq!(callback.shp, shp(&format!("inv-{inv_id}")));
    }

    async fn next_callback(&mut self) -> ResultCallback {
        tokio::time::timeout(Duration::from_secs(10), self.callbacks.recv())
            .await
            .expect("a ResultURL callback within 10 s")
            .expect("shop still running")
    }

    fn renewal(&self, inv_id: u32, previous_inv_id: u32) -> RecurringRequest {
        RecurringRequest {
            inv_id,
            previous_inv_id,
            out_sum: RUB_100,
            description: "renewal".to_owned(),
            shp: shp(&format!("inv-{inv_id}")),
            receipt: None,
        }
    }
}

#[tokio::test]
async fn payment_callback_and_op_state_against_the_fake() {
    let mut world = world(false, HashAlgorithm::Md5).await;
    world.pay_first_payment(1, false).await;

    let index = &world.fake.requests()[0];
    assert_eq!(index.path, "/Index.aspx");
    assert!(index.signature_valid, "{index:?}");
    assert_eq!(index.param("IsTest"), None);
    assert!(index.param("Receipt").is_some_and(|r| r.starts_with("%7B%22items%22")));

    let state = robokassa::op_state(&world.http, &world.config, 1)
        .await
        .expect("OpStateExt");
    assert!(state.is_paid(), "{state:?}");
    assert_eq!(state.out_sum, Some(RUB_100));
    assert_eq!(state.user_fields, shp("inv-1"));
    let op_state_request = world.fake.requests().pop().expect("OpStateExt recorded");
    assert!(op_state_request.signature_valid);

    let unknown = robokassa::op_state(&world.http, &world.config, 999).await.unwrap_err();
    assert!(matches!(unknown, RobokassaError::Service { code: 3, .. }), "{unknown}");

    let wrong_password = RobokassaConfig {
        password2: "guessed".to_owned(),
        ..world.config.clone()
    };
    let refused = robokassa::op_state(&world.http, &wrong_password, 1).await.unwrap_err();
    assert!(matches!(refused, RobokassaError::Service { code: 1, .. }), "{refused}");
    assert!(!refused.is_retryable());
}

#[tokio::test]
async fn recurring_charges_accepted_declined_and_pending() {
    let mut world = world(true, HashAlgorithm::Sha256).await;
    world.pay_first_payment(10, true).await;

    // Accepted, then confirmed by ResultURL.
    let accepted = robokassa::charge_recurring(&world.http, &world.config, &world.renewal(11, 10))
        .await
        .expect("renewal accepted");
    assert_eq!(accepted, RecurringAccepted { inv_id: 11 });
    let callback = world.next_callback().await;
    assert_eq!((callback.inv_id, callback.shp.clone()), (11, shp("inv-11")));
    assert!(callback.is_test);
    let recorded = world
        .fake
        .requests()
        .into_iter()
        .find(|r| r.path == "/Recurring")
        .expect("recurring request recorded");
    assert!(recorded.signature_valid, "{recorded:?}");
    assert_eq!(recorded.param("PreviousInvoiceID"), Some("10"));
    assert_eq!(recorded.param("IsTest"), Some("1"));
    let state = robokassa::op_state(&world.http, &world.config, 11)
        .await
        .expect("OpStateExt");
    assert!(state.is_paid());

    // Declined: the body comes back as the reason; nothing to check later.
    world
        .fake
        .next_recurring([RecurringOutcome::Decline("Card declined".to_owned())]);
    let declined = robokassa::charge_recurring(&world.http, &world.config, &world.renewal(12, 10))
        .await
        .unwrap_err();
    assert!(
        matches!(&declined, RobokassaError::Declined(reason) if reason == "Card declined"),
        "{declined}"
    );
    assert!(!declined.is_retryable());
    let unknown = robokassa::op_state(&world.http, &world.config, 12).await.unwrap_err();
    assert!(matches!(unknown, RobokassaError::Service { code: 3, .. }));

    // Accepted but not (yet) paid: OK means accepted, not paid.
    world
        .fake
        .next_recurring([RecurringOutcome::Accept { then_pay: false }]);
    robokassa::charge_recurring(&world.http, &world.config, &world.renewal(13, 10))
        .await
        .expect("renewal accepted");
    let state = robokassa::op_state(&world.http, &world.config, 13)
        .await
        .expect("OpStateExt");
    assert_eq!(state.state_code, Some(5));
    assert!(!state.is_paid());

    // A series that never started is refused.
    let orphan = robokassa::charge_recurring(&world.http, &world.config, &world.renewal(14, 999))
        .await
        .unwrap_err();
    assert!(matches!(orphan, RobokassaError::Declined(_)), "{orphan}");
}

#[tokio::test]
async fn network_failures_are_retryable_and_hide_the_signature() {
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = closed.local_addr().expect("address");
    drop(closed);
    let config = RobokassaConfig {
        base_url: format!("http://{address}"),
        ..config(false, HashAlgorithm::Md5)
    };
    let http = reqwest::Client::new();
    let err = robokassa::op_state(&http, &config, 1).await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert!(!err.to_string().contains("Signature="), "{err}");
    let request = RecurringRequest {
        inv_id: 2,
        previous_inv_id: 1,
        out_sum: RUB_100,
        description: "renewal".to_owned(),
        shp: BTreeMap::new(),
        receipt: None,
    };
    assert!(
        robokassa::charge_recurring(&http, &config, &request)
            .await
            .unwrap_err()
            .is_retryable()
    );
}

#[tokio::test]
async fn every_hash_algorithm_and_amount_format_is_accepted_by_the_fake() {
    for algorithm in HashAlgorithm::ALL {
        let config = config(false, algorithm);
        let fake = FakeRobokassa::new(config.clone());
        let config = RobokassaConfig {
            base_url: fake.start().await.expect("start fake"),
            ..config
        };
        let http = reqwest::Client::new();
        for (inv_id, out_sum, sent) in [
            (1, Decimal::new(99, 0), "99.00"),
            (2, Decimal::new(1995, 1), "199.50"),
            (3, Decimal::new(100_000, 3), "100.00"),
        ] {
            let request = PaymentRequest {
                inv_id,
                out_sum,
                description: "tokens".to_owned(),
                // Given out of order: signed sorted, whatever the map.
                shp: BTreeMap::from([
                    ("Shp_user".to_owned(), "42".to_owned()),
                    ("Shp_invoice".to_owned(), format!("inv-{inv_id}")),
                ]),
                receipt: None,
                recurring: false,
                email: None,
                culture: None,
            };
            let url = robokassa::payment_url(&config, &request).expect("payment URL");
            assert!(http.get(url).send().await.unwrap().status().is_success());
            let recorded = fake.take_requests().pop().expect("recorded");
            assert!(recorded.signature_valid, "{algorithm}: {recorded:?}");
            assert_eq!(recorded.param("OutSum"), Some(sent));
            // The fake's callback (six decimals, uppercase hex) verifies.
            let body = fake.result_callback_body(inv_id).expect("known invoice");
            let callback = ResultCallback::parse(&body).expect("parses");
            robokassa::verify_result(&config, &callback).expect("verifies");
            assert_eq!(callback.shp.keys().collect::<Vec<_>>(), ["Shp_invoice", "Shp_user"]);
        }
    }
}

// ---------------------------------------------------------------------------
// The payment-webhook routes end to end

mod end_to_end {
    use std::sync::Arc;

    use futures::future::join_all;
    use notifier::Notifier;
    use payment_webhook::{PaymentConfig, PaymentWebhook};
    use serde_json::Value;
    use tokenbill::Store;
    use tokenbill::domain::invoice::{Invoice, InvoiceStatus, Provider};
    use tokenbill::domain::notification::NotificationId;
    use tokenbill::payments::robokassa::{self, HashAlgorithm};
    use tokenbill::queue::NotificationQueue;
    use tokenbill::store::NewInvoice;
    use tokenbill_dev::fake_robokassa::FakeRobokassa;
    use tokenbill_dev::fake_telegram::FakeTelegram;
    use tokenbill_dev::poller::drain;
    use tokenbill_tests::faults::{DynamoFaults, faulty_store};
    use tokenbill_tests::{notification_queue, register, seed_catalog, serve_payments, sqs, unique_name, user};

    const LOGIN: &str = "tokenbill-shop";
    const PASSWORD1: &str = "shop-password-1";
    const PASSWORD2: &str = "shop-password-2";
    const FORM: (&str, &str) = ("Content-Type", "application/x-www-form-urlencoded");

    struct Shop {
        store: Store,
        payments: Arc<PaymentWebhook>,
        /// Where the payment webhook listens, as Robokassa would reach it.
        base: String,
        fake: FakeRobokassa,
        fake_base: String,
        /// The shop's Robokassa settings, as the admin CLI reads them.
        robokassa: robokassa::RobokassaConfig,
        queue: NotificationQueue,
        notifier: Notifier,
        telegram: FakeTelegram,
        faults: DynamoFaults,
        sqs: aws_sdk_sqs::Client,
        /// Follows no redirects: each hop is checked.
        browser: reqwest::Client,
    }

    /// The shop with Robokassa enabled against a fake; `clock` replaces
    /// the store's clock.
    async fn shop_with(clock: Option<Arc<tokenbill::ManualClock>>) -> Shop {
        let faults = DynamoFaults::default();
        let mut store = faulty_store(&faults).await;
        if let Some(clock) = clock {
            store = store.with_clock(clock);
        }
        seed_catalog(&store).await;
        let sqs = sqs().await;
        let url = notification_queue(&sqs, &unique_name("rk")).await;
        let queue = NotificationQueue::new(sqs.clone(), url.clone());

        let mut robokassa = robokassa::RobokassaConfig {
            merchant_login: LOGIN.into(),
            password1: PASSWORD1.into(),
            password2: PASSWORD2.into(),
            is_test: true,
            algorithm: HashAlgorithm::Sha256,
            base_url: String::new(),
            culture: None,
        };
        let fake = FakeRobokassa::new(robokassa.clone());
        let fake_url = fake.start().await.unwrap();
        robokassa.base_url = fake_url.clone();
        let config = PaymentConfig::from_lookup(|name| {
            Some(match name {
                "ROBOKASSA_LOGIN" => LOGIN.into(),
                "ROBOKASSA_PASSWORD1" => PASSWORD1.into(),
                "ROBOKASSA_PASSWORD2" => PASSWORD2.into(),
                "ROBOKASSA_HASH" => "sha256".into(),
                "ROBOKASSA_TEST" => "1".into(),
                "ROBOKASSA_URL" => fake_url.clone(),
                "TELEGRAM_BOT_USERNAME" => "TokenbillBot".into(),
                _ => return None,
            })
        })
        .unwrap();
        let payments = Arc::new(PaymentWebhook::new(store.clone(), queue.clone(), config));
        let base = serve_payments(payments.clone()).await;
        fake.set_shop(&base);

        let telegram = FakeTelegram::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let api = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(telegram.clone().serve(listener));
        let bot = teloxide_core::Bot::new("123:TEST").set_api_url(api.parse().unwrap());
        Shop {
            notifier: Notifier::new(store.clone(), bot, sqs.clone(), url),
            store,
            payments,
            base,
            fake,
            fake_base: fake_url,
            robokassa,
            queue,
            telegram,
            faults,
            sqs,
            browser: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
        }
    }

    async fn shop() -> Shop {
        shop_with(None).await
    }

    impl Shop {
        async fn invoice(&self, id: i64) -> Invoice {
            register(&self.store, id).await;
            let order = NewInvoice {
                user: user(id),
                tariff_id: tokenbill::domain::TariffId::new("pack_100").unwrap(),
                provider: Provider::Robokassa,
                promo: None,
            };
            self.store
                .create_invoice(order, chrono::Duration::hours(1))
                .await
                .unwrap()
        }

        /// One request to the handler, in-process.
        async fn request(&self, method: &str, uri: &str, body: &str) -> (u16, String) {
            let request = http::Request::builder()
                .method(method)
                .uri(uri)
                .header(FORM.0, FORM.1)
                .body(body.as_bytes().to_vec())
                .unwrap();
            let response = self.payments.handle(request).await;
            (response.status().as_u16(), response.body().clone())
        }

        async fn result(&self, body: &str) -> (u16, String) {
            self.request("POST", "/payments/robokassa/result", body).await
        }

        /// Follows the bot's pay link to the fake's payment page; returns
        /// the InvId it was given.
        async fn open_payment_page(&self, invoice: &Invoice) -> u32 {
            let link = format!("{}/payments/robokassa/pay/{}", self.base, invoice.id);
            let response = self.browser.get(&link).send().await.unwrap();
            assert_eq!(response.status().as_u16(), 302, "{}", response.text().await.unwrap());
            let location = response.headers()["location"].to_str().unwrap().to_owned();
            let location = url::Url::parse(&location).unwrap();
            let query: std::collections::BTreeMap<String, String> = location.query_pairs().into_owned().collect();
            assert_eq!(query["Shp_invoice"], invoice.id.as_str());
            assert_eq!(query["OutSum"], "99.00");
            assert_eq!(query["IsTest"], "1");
            let page = self.browser.get(location.clone()).send().await.unwrap();
            assert_eq!(page.status().as_u16(), 200);
            assert!(page.text().await.unwrap().contains("fake/pay"));
            query["InvId"].parse().unwrap()
        }

        /// A ResultURL body signed with Password #2 (sha256).
        fn signed_result(&self, out_sum: &str, inv_id: u32, shp: &[(&str, &str)], password: &str) -> String {
            let mut shp: Vec<_> = shp.to_vec();
            shp.sort();
            let tail: String = shp.iter().map(|(k, v)| format!(":{k}={v}")).collect();
            let signature = robokassa::sign(HashAlgorithm::Sha256, &format!("{out_sum}:{inv_id}:{password}{tail}"));
            let mut body = url::form_urlencoded::Serializer::new(String::new());
            body.append_pair("OutSum", out_sum)
                .append_pair("InvId", &inv_id.to_string())
                .append_pair("SignatureValue", &signature);
            body.extend_pairs(shp);
            body.finish()
        }

        async fn available(&self, id: i64) -> u64 {
            self.store.balance(user(id)).await.unwrap().0.available.get()
        }

        async fn status(&self, invoice: &Invoice) -> Invoice {
            self.store.invoice(&invoice.id).await.unwrap().unwrap()
        }

        /// Runs the notifier over everything queued; the messages sent.
        async fn deliver(&self) -> Vec<Value> {
            drain(&self.sqs, self.queue.url(), &self.notifier).await.unwrap();
            self.telegram
                .take_calls()
                .into_iter()
                .filter(|c| c.method == "sendmessage")
                .map(|c| c.params)
                .collect()
        }

        async fn assert_nothing_credited(&self, id: i64, invoice: &Invoice) {
            assert_eq!(self.available(id).await, 0);
            assert!(self.store.ledger_entries(user(id)).await.unwrap().is_empty());
            assert_eq!(self.status(invoice).await.status, InvoiceStatus::Pending);
            assert!(self.deliver().await.is_empty());
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn fifty_concurrent_result_callbacks_credit_once() {
        let shop = shop().await;
        let invoice = shop.invoice(1).await;
        let inv_id = shop.open_payment_page(&invoice).await;
        assert_eq!(
            shop.status(&invoice).await.provider_ref.as_deref(),
            Some(inv_id.to_string().as_str()),
            "the InvId is saved with the invoice"
        );
        let body = shop.fake.result_callback_body(inv_id).unwrap();
        assert!(body.contains("OutSum=99.000000"), "{body}");
        let answers = join_all((0..50).map(|_| shop.result(&body))).await;
        for answer in &answers {
            assert_eq!(answer, &(200, format!("OK{inv_id}")));
        }
        // A GET delivery of the same callback, later: the same answer.
        let (status, answer) = shop
            .request("GET", &format!("/payments/robokassa/result?{body}"), "")
            .await;
        assert_eq!((status, answer), (200, format!("OK{inv_id}")));

        assert_eq!(shop.available(1).await, 100);
        assert_eq!(
            shop.store.ledger_entries(user(1)).await.unwrap().len(),
            1,
            "one ledger entry"
        );
        assert!(shop.store.audit(user(1)).await.unwrap().is_ok());
        let paid = shop.status(&invoice).await;
        assert_eq!(paid.status, InvoiceStatus::Paid);
        assert!(!paid.paid_late);
        let sent = shop.deliver().await;
        assert_eq!(sent.len(), 1, "one notification: {sent:?}");
        assert_eq!(sent[0]["chat_id"], 1);
        assert!(
            shop.store
                .notification(&NotificationId::payment(&invoice.id))
                .await
                .unwrap()
                .is_some()
        );
        // The pay link now says so instead of charging twice.
        let (status, page) = shop
            .request("GET", &format!("/payments/robokassa/pay/{}", invoice.id), "")
            .await;
        assert_eq!(status, 200);
        assert!(page.contains("Already paid"), "{page}");

        // Refunded later (in Robokassa's dashboard, then recorded): a late
        // repeat of the callback is acknowledged and credits nothing again.
        shop.store.refund_invoice(&invoice.id).await.unwrap();
        assert_eq!(shop.available(1).await, 0);
        assert_eq!(shop.result(&body).await, (200, format!("OK{inv_id}")));
        assert_eq!(shop.available(1).await, 0);
        assert_eq!(shop.status(&invoice).await.status, InvoiceStatus::Refunded);
        let (_, page) = shop
            .request("GET", &format!("/payments/robokassa/pay/{}", invoice.id), "")
            .await;
        assert!(page.contains("refunded"), "{page}");
    }

    #[tokio::test]
    async fn forged_altered_and_unknown_callbacks_credit_nothing() {
        let shop = shop().await;
        let invoice = shop.invoice(2).await;
        let other = shop.invoice(3).await;
        let inv_id = shop.open_payment_page(&invoice).await;
        let other_inv_id = shop.open_payment_page(&other).await;
        assert_ne!(inv_id, other_inv_id, "each invoice has its own InvId");
        let ours = [("Shp_invoice", invoice.id.as_str())];
        let genuine = shop.fake.result_callback_body(inv_id).unwrap();

        let refused = |(status, body): (u16, String), code: &str| {
            assert_eq!((status, body.as_str()), (400, code));
        };
        // Forged: signed with a guessed password.
        refused(
            shop.result(&shop.signed_result("99.00", inv_id, &ours, "guess")).await,
            "bad_signature",
        );
        // OutSum changed after signing.
        refused(
            shop.result(&genuine.replace("OutSum=99.000000", "OutSum=1.000000"))
                .await,
            "bad_signature",
        );
        // Another invoice's id put in Shp_invoice after signing.
        let tampered = genuine.replace(
            &format!("Shp_invoice={}", invoice.id),
            &format!("Shp_invoice={}", other.id),
        );
        assert_ne!(tampered, genuine);
        refused(shop.result(&tampered).await, "bad_signature");
        // A signature for the wrong amount: signed, but not what is due.
        refused(
            shop.result(&shop.signed_result("1.00", inv_id, &ours, PASSWORD2)).await,
            "payment_mismatch",
        );
        refused(
            shop.result(&shop.signed_result("99.001", inv_id, &ours, PASSWORD2))
                .await,
            "payment_mismatch",
        );
        // Signed with Password #1 (what SuccessURL uses): not a ResultURL.
        refused(
            shop.result(&shop.signed_result("99.00", inv_id, &ours, PASSWORD1))
                .await,
            "bad_signature",
        );
        // Our invoice with an InvId that is not its own (here the other
        // invoice's): never credited across invoices.
        refused(
            shop.result(&shop.signed_result("99.00", other_inv_id, &ours, PASSWORD2))
                .await,
            "payment_mismatch",
        );
        // An unknown InvId, and an unknown invoice.
        refused(
            shop.result(&shop.signed_result("99.00", 2_000_000_000, &ours, PASSWORD2))
                .await,
            "payment_mismatch",
        );
        refused(
            shop.result(&shop.signed_result("99.00", inv_id, &[("Shp_invoice", "nosuchinvoice")], PASSWORD2))
                .await,
            "not_found",
        );
        // No Shp_invoice, broken fields, repeated fields.
        refused(
            shop.result(&shop.signed_result("99.00", inv_id, &[], PASSWORD2)).await,
            "malformed",
        );
        refused(shop.result("OutSum=abc&InvId=1&SignatureValue=00").await, "malformed");
        refused(shop.result("").await, "malformed");
        refused(shop.result(&format!("{genuine}&OutSum=1.000000")).await, "malformed");

        shop.assert_nothing_credited(2, &invoice).await;
        shop.assert_nothing_credited(3, &other).await;

        // The genuine callback still credits afterwards.
        assert_eq!(shop.result(&genuine).await, (200, format!("OK{inv_id}")));
        assert_eq!(shop.available(2).await, 100);
        assert_eq!(shop.available(3).await, 0);
    }

    #[tokio::test]
    async fn a_payment_confirmed_after_expiry_is_credited_late() {
        let clock = Arc::new(tokenbill::ManualClock::new(chrono::Utc::now()));
        let shop = shop_with(Some(clock.clone())).await;
        let invoice = shop.invoice(4).await;
        let inv_id = shop.open_payment_page(&invoice).await;
        clock.advance(chrono::Duration::hours(2));
        // The link no longer leads to Robokassa...
        let (status, page) = shop
            .request("GET", &format!("/payments/robokassa/pay/{}", invoice.id), "")
            .await;
        assert_eq!(status, 200);
        assert!(page.contains("expired"), "{page}");
        assert_eq!(
            shop.store.expire_invoice(&invoice.id).await.unwrap().status,
            InvoiceStatus::Expired
        );
        let (_, page) = shop
            .request("GET", &format!("/payments/robokassa/pay/{}", invoice.id), "")
            .await;
        assert!(page.contains("can no longer be paid"), "{page}");
        // ...but money Robokassa took meanwhile is credited, marked late.
        assert_eq!(shop.fake.pay(inv_id).await, Ok(format!("OK{inv_id}")));
        let paid = shop.status(&invoice).await;
        assert_eq!(paid.status, InvoiceStatus::Paid);
        assert!(paid.paid_late);
        assert_eq!(shop.available(4).await, 100);
        assert!(shop.store.audit(user(4)).await.unwrap().is_ok());
        assert_eq!(shop.deliver().await.len(), 1);
    }

    #[tokio::test]
    async fn dynamodb_failing_mid_payment_answers_5xx_and_the_retry_credits_once() {
        let shop = shop().await;
        let invoice = shop.invoice(5).await;
        let inv_id = shop.open_payment_page(&invoice).await;
        let body = shop.fake.result_callback_body(inv_id).unwrap();
        // The invoice read succeeds; the transaction (and the SDK's retries) fail.
        shop.faults.fail_after(1, 3);
        let (status, answer) = shop.result(&body).await;
        assert_eq!((status, answer.as_str()), (503, "unavailable"));
        assert_eq!(shop.available(5).await, 0);
        // Robokassa calls again: credited once.
        assert_eq!(shop.result(&body).await, (200, format!("OK{inv_id}")));
        assert_eq!(shop.result(&body).await, (200, format!("OK{inv_id}")));
        assert_eq!(shop.available(5).await, 100);
        assert!(shop.store.audit(user(5)).await.unwrap().is_ok());
        assert_eq!(shop.deliver().await.len(), 1);
    }

    #[tokio::test]
    async fn the_browser_pays_through_the_fake_and_comes_back() {
        let shop = shop().await;
        let invoice = shop.invoice(6).await;
        let inv_id = shop.open_payment_page(&invoice).await;

        // Before ResultURL arrives, a (genuine) SuccessURL credits nothing.
        let early = shop.fake.success_query(inv_id).unwrap();
        let (status, page) = shop
            .request("GET", &format!("/payments/robokassa/success?{early}"), "")
            .await;
        assert_eq!(status, 200);
        assert!(page.contains("being confirmed"), "{page}");
        assert_eq!(shop.available(6).await, 0);

        // Pay: the fake calls ResultURL, then sends the browser to SuccessURL.
        assert_eq!(shop.fake.requests()[0].path, "/Index.aspx");
        let paid = shop
            .browser
            .post(format!("{}/fake/pay", shop.fake_base))
            .form(&[("InvId", inv_id.to_string())])
            .send()
            .await
            .unwrap();
        assert_eq!(paid.status().as_u16(), 303);
        let success = paid.headers()["location"].to_str().unwrap().to_owned();
        assert!(
            success.starts_with(&format!("{}/payments/robokassa/success?", shop.base)),
            "{success}"
        );
        let callbacks = shop.fake.callbacks();
        assert_eq!(callbacks.len(), 1);
        assert_eq!(callbacks[0].answer, Ok(format!("OK{inv_id}")));
        assert_eq!(shop.available(6).await, 100);
        let page = shop.browser.get(&success).send().await.unwrap();
        assert_eq!(page.status().as_u16(), 200);
        let page = page.text().await.unwrap();
        assert!(
            page.contains("Payment received") && page.contains("https://t.me/TokenbillBot"),
            "{page}"
        );
        // Reloading the success page credits nothing more.
        shop.browser.get(&success).send().await.unwrap();
        assert_eq!(shop.available(6).await, 100);
        assert_eq!(shop.deliver().await.len(), 1);

        // A SuccessURL signed with Password #2, or altered, is refused.
        let forged = success.replace("SignatureValue=", "SignatureValue=00");
        let page = shop.browser.get(&forged).send().await.unwrap();
        assert_eq!(page.status().as_u16(), 401);

        // Another invoice: the payer cancels on Robokassa's page.
        let declined = shop.invoice(7).await;
        let inv_id = shop.open_payment_page(&declined).await;
        let cancelled = shop
            .browser
            .post(format!("{}/fake/cancel", shop.fake_base))
            .form(&[("InvId", inv_id.to_string())])
            .send()
            .await
            .unwrap();
        assert_eq!(cancelled.status().as_u16(), 303);
        let fail = cancelled.headers()["location"].to_str().unwrap().to_owned();
        assert!(fail.starts_with(&format!("{}/payments/robokassa/fail?", shop.base)));
        let page = shop.browser.get(&fail).send().await.unwrap();
        assert_eq!(page.status().as_u16(), 200);
        let page = page.text().await.unwrap();
        assert!(page.contains("No money was taken") && page.contains("t.me/TokenbillBot"));
        shop.assert_nothing_credited(7, &declined).await;
        // The invoice stays payable: the link leads to Robokassa again, same InvId.
        assert_eq!(shop.open_payment_page(&declined).await, inv_id);
    }

    #[tokio::test]
    async fn routes_refuse_what_they_cannot_serve() {
        let shop = shop().await;
        // Not a Robokassa invoice, unknown, closed.
        register(&shop.store, 8).await;
        let mock = shop
            .store
            .create_invoice(
                NewInvoice {
                    user: user(8),
                    tariff_id: tokenbill::domain::TariffId::new("pack_100").unwrap(),
                    provider: Provider::Mock,
                    promo: None,
                },
                chrono::Duration::hours(1),
            )
            .await
            .unwrap();
        for id in [mock.id.as_str(), "nosuchinvoice", "bad%20id!"] {
            let (status, page) = shop.request("GET", &format!("/payments/robokassa/pay/{id}"), "").await;
            assert_eq!(status, 404, "{id}");
            assert!(page.contains("not valid"), "{page}");
        }
        let cancelled = shop.invoice(9).await;
        shop.store.cancel_invoice(&cancelled.id, user(9)).await.unwrap();
        let (status, page) = shop
            .request("GET", &format!("/payments/robokassa/pay/{}", cancelled.id), "")
            .await;
        assert_eq!(status, 200);
        assert!(page.contains("can no longer be paid"), "{page}");
        assert_eq!(shop.status(&cancelled).await.provider_ref, None, "no InvId spent on it");

        // Robokassa not configured: its routes are off, with a code.
        let off = PaymentWebhook::new(
            shop.store.clone(),
            shop.queue.clone(),
            PaymentConfig::from_lookup(|_| None).unwrap(),
        );
        let call = |method: &str, uri: &str| {
            http::Request::builder()
                .method(method)
                .uri(uri)
                .body(Vec::new())
                .unwrap()
        };
        let response = off.handle(call("POST", "/payments/robokassa/result")).await;
        assert_eq!(
            (response.status().as_u16(), response.body().as_str()),
            (404, "provider_disabled")
        );
        let response = off
            .handle(call("GET", &format!("/payments/robokassa/pay/{}", cancelled.id)))
            .await;
        assert_eq!(response.status().as_u16(), 404);
        assert!(response.body().contains("not available"));
        // Half configured: the cold start fails, naming what is missing.
        let half = PaymentConfig::from_lookup(|name| (name == "ROBOKASSA_LOGIN").then(|| "shop".to_owned()));
        let err = half.unwrap_err();
        assert!(err.contains("ROBOKASSA_PASSWORD1"), "{err}");
        assert!(payment_webhook::SECRETS.contains(&"ROBOKASSA_PASSWORD2"));
    }

    #[tokio::test]
    async fn payments_check_compares_with_op_state_and_credits_a_lost_result_url() {
        use tokenbill_admin::payment_check::{Verdict, check};
        let shop = shop().await;
        let http = reqwest::Client::new();
        let config = Some(&shop.robokassa);
        let mut out = Vec::new();
        let invoice = shop.invoice(10).await;
        let id = invoice.id.as_str();
        assert_eq!(
            check(&shop.store, config, &http, id, false, &mut out).await.unwrap(),
            Verdict::Unchecked,
            "no InvId before the payment page"
        );
        let inv_id = shop.open_payment_page(&invoice).await;
        assert_eq!(
            check(&shop.store, config, &http, id, false, &mut out).await.unwrap(),
            Verdict::Consistent,
            "opened, not paid"
        );
        // Robokassa takes the money, but its ResultURL never gets through.
        shop.fake.set_result_url("http://127.0.0.1:1/payments/robokassa/result");
        assert!(shop.fake.pay(inv_id).await.is_err());
        assert_eq!(shop.available(10).await, 0);
        assert_eq!(
            check(&shop.store, config, &http, id, false, &mut out).await.unwrap(),
            Verdict::PaidNotCredited
        );
        assert_eq!(shop.available(10).await, 0, "a check alone changes nothing");
        assert_eq!(
            check(&shop.store, config, &http, id, true, &mut out).await.unwrap(),
            Verdict::CreditedNow
        );
        assert_eq!(shop.available(10).await, 100);
        assert_eq!(
            check(&shop.store, config, &http, id, true, &mut out).await.unwrap(),
            Verdict::Consistent,
            "credited once"
        );
        assert_eq!(shop.available(10).await, 100);
        let printed = String::from_utf8(out).unwrap();
        assert!(
            printed.contains(&format!("robokassa InvId {inv_id}: state 100 (paid), OutSum 99")),
            "{printed}"
        );
        assert!(
            printed.contains("MISMATCH: paid at Robokassa, not credited"),
            "{printed}"
        );
        assert!(printed.contains("ok: paid and credited"), "{printed}");
        assert!(!printed.contains(PASSWORD2), "{printed}");

        // Robokassa not configured: said so, not guessed.
        assert!(
            check(&shop.store, None, &http, id, false, &mut Vec::new())
                .await
                .is_err()
        );
        assert!(
            check(&shop.store, config, &http, "nosuch", false, &mut Vec::new())
                .await
                .is_err()
        );
    }

    /// `make dev`: the dev runner mounts a fake Robokassa and the routes, so
    /// a Robokassa link pays locally, end to end.
    #[tokio::test]
    async fn the_dev_runner_pays_by_robokassa_through_its_fake() {
        let store = tokenbill_tests::fresh_store().await;
        let sqs = sqs().await;
        tokenbill_dev::prepare(&store, &sqs).await.unwrap();
        register(&store, 11).await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let app = tokenbill_dev::local_app(store.clone(), sqs, &unique_name("dev"), base.clone())
            .await
            .unwrap();
        let fake = app.robokassa.clone().expect("a fake Robokassa without ROBOKASSA_LOGIN");
        tokio::spawn(tokenbill_dev::serve(listener, app.state, std::future::pending()));

        let invoice = store
            .create_invoice(
                NewInvoice {
                    user: user(11),
                    tariff_id: tokenbill::domain::TariffId::new("pack_100").unwrap(),
                    provider: Provider::Robokassa,
                    promo: None,
                },
                chrono::Duration::hours(1),
            )
            .await
            .unwrap();
        let browser = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let to_robokassa = browser
            .get(format!("{base}/payments/robokassa/pay/{}", invoice.id))
            .send()
            .await
            .unwrap();
        assert_eq!(to_robokassa.status().as_u16(), 302);
        let payment_page = url::Url::parse(to_robokassa.headers()["location"].to_str().unwrap()).unwrap();
        let page = browser.get(payment_page.clone()).send().await.unwrap();
        assert_eq!(page.status().as_u16(), 200);
        assert!(page.text().await.unwrap().contains("test mode"));
        let inv_id = payment_page
            .query_pairs()
            .find(|(k, _)| k == "InvId")
            .map(|(_, v)| v.into_owned())
            .unwrap();
        let paid = browser
            .post(payment_page.join("fake/pay").unwrap())
            .form(&[("InvId", inv_id.as_str())])
            .send()
            .await
            .unwrap();
        assert_eq!(paid.status().as_u16(), 303);
        assert_eq!(fake.callbacks()[0].answer, Ok(format!("OK{inv_id}")));
        let success = paid.headers()["location"].to_str().unwrap().to_owned();
        let page = browser.get(&success).send().await.unwrap().text().await.unwrap();
        assert!(page.contains("Payment received"), "{page}");
        assert_eq!(store.balance(user(11)).await.unwrap().0.available.get(), 100);
    }

    #[tokio::test]
    async fn a_subscriptions_card_is_charged_again_through_recurring() {
        use tokenbill::domain::subscription::RenewalMethod;
        use tokenbill::payments::robokassa::RobokassaRecurring;
        use tokenbill::payments::{ChargeError, ChargeOutcome, RecurringCharge};
        use tokenbill_dev::fake_robokassa::RecurringOutcome;

        let shop = shop().await;
        register(&shop.store, 50).await;
        let order = |tariff: &str, provider| NewInvoice {
            user: user(50),
            tariff_id: tokenbill::domain::TariffId::new(tariff).unwrap(),
            provider,
            promo: None,
        };
        let store = &shop.store;
        let create = |tariff: &'static str, provider| async move {
            store
                .create_invoice(order(tariff, provider), chrono::Duration::hours(1))
                .await
                .unwrap()
        };
        // The subscription's first payment asks Robokassa to keep the card.
        let first = create("sub_month", Provider::Robokassa).await;
        assert!(first.recurring);
        let link = format!("{}/payments/robokassa/pay/{}", shop.base, first.id);
        let response = shop.browser.get(&link).send().await.unwrap();
        let location = url::Url::parse(response.headers()["location"].to_str().unwrap()).unwrap();
        let query: std::collections::BTreeMap<String, String> = location.query_pairs().into_owned().collect();
        assert_eq!(query["Recurring"], "true");
        shop.browser.get(location.clone()).send().await.unwrap();
        let parent: u32 = query["InvId"].parse().unwrap();
        shop.fake.pay(parent).await.unwrap();
        let paid = shop.status(&first).await;
        assert_eq!(paid.status, InvoiceStatus::Paid);
        let method = paid.renewal.clone().expect("the parent payment is saved for renewals");
        assert_eq!(method, RenewalMethod::Robokassa { parent_inv_id: parent });
        assert_eq!(shop.available(50).await, 3000);

        let recurring = RobokassaRecurring::new(shop.robokassa.clone(), reqwest::Client::new(), shop.store.clone());
        // Accepted: the fake then calls ResultURL, which credits.
        let renewal = create("pack_100", Provider::Robokassa).await;
        let outcome = recurring.charge_again(&method, &renewal).await.unwrap();
        let ChargeOutcome::Accepted { provider_ref } = outcome else {
            panic!("{outcome:?}");
        };
        let child: u32 = provider_ref.parse().unwrap();
        assert_ne!(child, parent, "a charge has its own InvId");
        let charge = shop
            .fake
            .requests()
            .into_iter()
            .rfind(|r| r.path == "/Recurring")
            .unwrap();
        assert_eq!(charge.param("PreviousInvoiceID"), Some(parent.to_string().as_str()));
        assert_eq!(charge.param("OutSum"), Some("99.00"));
        let mut renewed = shop.status(&renewal).await;
        for _ in 0..50 {
            if renewed.status == InvoiceStatus::Paid {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            renewed = shop.status(&renewal).await;
        }
        assert_eq!(renewed.status, InvoiceStatus::Paid, "ResultURL confirmed the charge");
        assert_eq!(renewed.renewal, None, "a renewal is not a new parent");
        assert_eq!(shop.available(50).await, 3100);
        // Charging a paid invoice again asks Robokassa nothing.
        let before = shop.fake.requests().len();
        assert_eq!(
            recurring.charge_again(&method, &renewed).await.unwrap(),
            ChargeOutcome::Paid {
                provider_ref: child.to_string()
            }
        );
        assert_eq!(shop.fake.requests().len(), before);

        // Declined: nothing credited, the invoice stays payable.
        let declined = create("pack_100", Provider::Robokassa).await;
        shop.fake
            .next_recurring([RecurringOutcome::Decline("Card declined".to_owned())]);
        assert_eq!(
            recurring.charge_again(&method, &declined).await.unwrap(),
            ChargeOutcome::Declined {
                reason: "Card declined".into()
            }
        );
        assert_eq!(shop.status(&declined).await.status, InvoiceStatus::Pending);
        // Robokassa unreachable: retryable.
        let mut down = shop.robokassa.clone();
        down.base_url = "http://127.0.0.1:1/Merchant".into();
        let unreachable = RobokassaRecurring::new(down, reqwest::Client::new(), shop.store.clone())
            .charge_again(&method, &declined)
            .await
            .unwrap();
        assert!(
            matches!(unreachable, ChargeOutcome::Unavailable { .. }),
            "{unreachable:?}"
        );
        // Another provider's invoice is not charged.
        let mock = create("pack_100", Provider::Mock).await;
        let wrong = recurring.charge_again(&method, &mock).await;
        assert!(matches!(wrong, Err(ChargeError::Invoice { .. })), "{wrong:?}");
        assert_eq!(shop.available(50).await, 3100);
        assert!(shop.store.audit(user(50)).await.unwrap().is_ok());
    }
}
