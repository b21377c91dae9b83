//! The Robokassa protocol against the fake Robokassa on loopback: payment
//! URL, ResultURL callbacks, recurring charges and `OpStateExt`. Needs no
//! local stack.

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
    RobokassaConfig {
        merchant_login: "tokenbill-test".to_owned(),
        password1: "live-one".to_owned(),
        password2: "live-two".to_owned(),
        test_password1: "test-one".to_owned(),
        test_password2: "test-two".to_owned(),
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
