//! Subscriptions end to end against DynamoDB Local and moto's SQS: bought
//! through the mock checkout (a saved card that approves or declines, as
//! minted), renewed by the sweep through the mock provider's recurring API
//! over HTTP on loopback, Telegram Stars renewals, reminders, dunning and
//! expiry, each message delivered by the notifier to a fake Bot API. Time is
//! a `ManualClock`: nothing sleeps.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use chrono::{DateTime, Duration, Utc};
use futures::future::join_all;
use notifier::Notifier;
use payment_webhook::{PaymentConfig, PaymentWebhook};
use tokenbill::domain::EntryKind;
use tokenbill::domain::invoice::{Invoice, InvoiceStatus, Provider};
use tokenbill::domain::notification::NotificationId;
use tokenbill::domain::subscription::{RenewalMethod, SubscriptionStatus};
use tokenbill::payments::Renewals;
use tokenbill::payments::mock::{CardBehaviour, MockProvider, MockRecurring};
use tokenbill::queue::NotificationQueue;
use tokenbill::store::{NewInvoice, PaymentProof, renewal_invoice_id};
use tokenbill::sweep::{SweepReport, sweep};
use tokenbill::timers::{SubscriptionTimers, at_expression, parse_at};
use tokenbill::{ManualClock, Store};
use tokenbill_dev::fake_telegram::FakeTelegram;
use tokenbill_dev::poller::drain;
use tokenbill_tests::{
    fresh_store, fresh_timers, notification_queue, register, seed_catalog, sqs, tokens, unique_name, user,
};

const MOCK_SECRET: &str = "mock-secret-for-subscriptions";
const PERIOD: Duration = Duration::days(30);

struct World {
    store: Store,
    clock: ManualClock,
    payments: Arc<PaymentWebhook>,
    renewals: Renewals,
    /// Requests the mock provider's recurring API received (charges).
    charges: Arc<AtomicUsize>,
    queue: NotificationQueue,
    notifier: Notifier,
    telegram: FakeTelegram,
    sqs: aws_sdk_sqs::Client,
}

/// Serves the payment webhook on loopback, counting recurring charges.
async fn serve(payments: Arc<PaymentWebhook>, charges: Arc<AtomicUsize>) -> String {
    let router = axum::Router::new().fallback(move |request: axum::http::Request<axum::body::Body>| {
        let (payments, charges) = (payments.clone(), charges.clone());
        async move {
            if request.uri().path() == "/payments/mock/recurring" {
                charges.fetch_add(1, Ordering::SeqCst);
            }
            let (parts, body) = request.into_parts();
            let body = axum::body::to_bytes(body, 1 << 20).await.unwrap_or_default();
            let response = payments.handle(http::Request::from_parts(parts, body)).await;
            let (parts, body) = response.into_parts();
            axum::response::Response::from_parts(parts, axum::body::Body::from(body))
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    base
}

async fn world() -> World {
    world_with(None).await
}

/// A world whose subscriptions keep one-time schedules in `timers`.
async fn world_with(timers: Option<SubscriptionTimers>) -> World {
    let clock = ManualClock::new(Utc::now());
    let store = fresh_store()
        .await
        .with_clock(Arc::new(clock.clone()))
        .with_timers(timers);
    seed_catalog(&store).await;
    let sqs = sqs().await;
    let url = notification_queue(&sqs, &unique_name("sq")).await;
    let queue = NotificationQueue::new(sqs.clone(), url.clone());
    let config =
        PaymentConfig::from_lookup(|name| (name == "MOCK_PROVIDER_SECRET").then(|| MOCK_SECRET.to_owned())).unwrap();
    let payments = Arc::new(PaymentWebhook::new(store.clone(), queue.clone(), config));
    let charges = Arc::new(AtomicUsize::new(0));
    let base = serve(payments.clone(), charges.clone()).await;
    let mock = MockRecurring::new(MockProvider::new(MOCK_SECRET).unwrap(), &base, reqwest::Client::new())
        .unwrap()
        .with_clock(Arc::new(clock.clone()));
    let telegram = FakeTelegram::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(telegram.clone().serve(listener));
    let bot = teloxide_core::Bot::new("123:TEST").set_api_url(api.parse().unwrap());
    World {
        notifier: Notifier::new(store.clone(), bot, sqs.clone(), url),
        renewals: Renewals {
            mock: Some(mock),
            robokassa: None,
        },
        store,
        clock,
        payments,
        charges,
        queue,
        telegram,
        sqs,
    }
}

impl World {
    async fn invoice(&self, id: i64, provider: Provider) -> Invoice {
        register(&self.store, id).await;
        let order = NewInvoice {
            user: user(id),
            tariff_id: "sub_month".parse().unwrap(),
            provider,
            promo: None,
        };
        self.store.create_invoice(order, Duration::hours(1)).await.unwrap()
    }

    /// Buys the monthly subscription on the mock checkout, saving a card
    /// that answers every later charge with `card`.
    async fn buy(&self, id: i64, card: CardBehaviour) -> Invoice {
        let invoice = self.invoice(id, Provider::Mock).await;
        let body = format!("action=pay&save_card=1&card={}", card.as_str());
        let request = http::Request::builder()
            .method("POST")
            .uri(format!("/payments/mock/checkout/{}", invoice.id))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(body.into_bytes())
            .unwrap();
        let response = self.payments.handle(request).await;
        assert_eq!(response.status(), 200, "{}", response.body());
        self.store.invoice(&invoice.id).await.unwrap().unwrap()
    }

    async fn sweep(&self) -> SweepReport {
        sweep(&self.store, &self.queue, &self.renewals).await.unwrap()
    }

    /// Moves the clock to `at` and sweeps.
    async fn sweep_at(&self, at: DateTime<Utc>) -> SweepReport {
        let now = self.store.now();
        assert!(at >= now, "time only moves forward");
        self.clock.advance(at - now);
        self.sweep().await
    }

    async fn available(&self, id: i64) -> u64 {
        self.store.balance(user(id)).await.unwrap().0.available.get()
    }

    /// The user's ledger entries of one kind, oldest first.
    async fn entries(&self, id: i64, kind: EntryKind) -> Vec<u64> {
        let mut entries = self.store.ledger_entries(user(id)).await.unwrap();
        entries.sort_by_key(|e| e.created_at);
        entries
            .into_iter()
            .filter(|e| e.kind == kind)
            .map(|e| e.amount.get())
            .collect()
    }

    async fn audited(&self, id: i64) {
        let report = self.store.audit(user(id)).await.unwrap();
        assert!(report.is_ok(), "{report:?}");
    }

    /// Everything queued, delivered by the notifier: the texts sent.
    async fn messages(&self) -> Vec<String> {
        drain(&self.sqs, self.queue.url(), &self.notifier).await.unwrap();
        self.telegram
            .take_calls()
            .into_iter()
            .filter(|c| c.method == "sendmessage")
            .map(|c| c.params["text"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    async fn notified(&self, id: &NotificationId) -> bool {
        self.store.notification(id).await.unwrap().is_some()
    }

    async fn set_auto_renew(&self, id: i64, on: bool) {
        let switched = self.store.switch_auto_renew(user(id), on, Vec::new()).await.unwrap();
        assert!(
            switched.is_some_and(|sub| sub.auto_renew == on),
            "user {id} has a subscription"
        );
    }
}

fn has(messages: &[String], needle: &str) -> usize {
    messages.iter().filter(|m| m.contains(needle)).count()
}

#[tokio::test]
async fn a_purchase_starts_the_subscription_and_the_sweep_renews_it_once() {
    let w = world().await;
    let t0 = w.store.now();
    let first = w.buy(1, CardBehaviour::Approve).await;
    let sub = w.store.subscription(user(1)).await.unwrap().unwrap();
    assert_eq!(
        (sub.status, sub.period, sub.auto_renew),
        (SubscriptionStatus::Active, 1, true)
    );
    assert_eq!((sub.period_start, sub.period_end), (t0, t0 + PERIOD));
    assert_eq!(sub.tokens_per_period, tokens(3000));
    assert!(matches!(sub.renewal, Some(RenewalMethod::Mock { .. })), "{sub:?}");
    assert_eq!(
        sub.next_action_at,
        Some(t0 + PERIOD - Duration::days(3)),
        "first the reminder's time"
    );
    assert_eq!(
        w.entries(1, EntryKind::Purchase).await,
        vec![3000],
        "the first period is the purchase"
    );
    assert_eq!(has(&w.messages().await, "Payment received"), 1);
    assert_eq!(w.sweep().await, SweepReport::default(), "nothing due yet");

    // The reminders come due, but the period renews by itself: no message.
    let report = w.sweep_at(t0 + PERIOD - Duration::days(3)).await;
    assert_eq!(report.renewals.reminders, 0);
    w.sweep_at(t0 + PERIOD - Duration::days(1)).await;
    assert!(w.messages().await.is_empty());
    assert!(!w.notified(&NotificationId::renewal_reminder(user(1), 1, 3)).await);

    // The period ends: charged once, granted once, extended from its end.
    let report = w.sweep_at(t0 + PERIOD).await;
    assert_eq!((report.renewals.charges, report.renewals.paid), (1, 1));
    assert_eq!(w.charges.load(Ordering::SeqCst), 1);
    let renewal = renewal_invoice_id(user(1), 2, 1).unwrap();
    let paid = w.store.invoice(&renewal).await.unwrap().unwrap();
    assert_eq!((paid.status, paid.recurring), (InvoiceStatus::Paid, false));
    let sub = w.store.subscription(user(1)).await.unwrap().unwrap();
    assert_eq!(
        (sub.status, sub.period, sub.failed_attempts),
        (SubscriptionStatus::Active, 2, 0)
    );
    assert_eq!((sub.period_start, sub.period_end), (t0 + PERIOD, t0 + PERIOD * 2));
    assert_eq!(w.entries(1, EntryKind::Renewal).await, vec![3000]);
    assert_eq!(w.available(1).await, 6000);
    let messages = w.messages().await;
    assert_eq!(has(&messages, "renewed until"), 1, "{messages:?}");
    assert_eq!(messages.len(), 1, "{messages:?}");

    // Sweeping again changes nothing; the first invoice kept its card.
    assert_eq!(w.sweep().await, SweepReport::default());
    assert_eq!(w.charges.load(Ordering::SeqCst), 1);
    assert!(first.renewal.is_some());
    w.audited(1).await;

    // Buying again while active adds a period to the end, never shortens it.
    w.buy(1, CardBehaviour::Approve).await;
    let sub = w.store.subscription(user(1)).await.unwrap().unwrap();
    assert_eq!((sub.period, sub.period_end), (3, t0 + PERIOD * 3));
    assert_eq!(w.entries(1, EntryKind::Purchase).await, vec![3000, 3000]);
    w.audited(1).await;
}

#[tokio::test]
async fn a_declined_renewal_is_retried_and_a_later_attempt_renews() {
    let w = world().await;
    let t0 = w.store.now();
    w.buy(2, CardBehaviour::Decline).await;
    w.messages().await;
    let end = t0 + PERIOD;

    let report = w.sweep_at(end).await;
    assert_eq!((report.renewals.charges, report.renewals.declined), (1, 1));
    let sub = w.store.subscription(user(2)).await.unwrap().unwrap();
    assert_eq!((sub.status, sub.failed_attempts), (SubscriptionStatus::PastDue, 1));
    assert_eq!(
        sub.next_action_at,
        Some(end + Duration::days(1)),
        "the next attempt in a day"
    );
    let first_attempt = renewal_invoice_id(user(2), 2, 1).unwrap();
    assert!(w.notified(&NotificationId::renewal_failed(&first_attempt)).await);
    let messages = w.messages().await;
    assert_eq!(has(&messages, "Could not renew"), 1, "{messages:?}");
    assert_eq!(w.sweep().await, SweepReport::default(), "nothing until the retry");

    // The user saves a card that works; the next attempt charges it.
    let mut record = w.store.subscription_record(user(2)).await.unwrap().unwrap();
    record.subscription.renewal = Some(RenewalMethod::Mock {
        recurring_token: MockProvider::new(MOCK_SECRET)
            .unwrap()
            .mint_token(user(2), CardBehaviour::Approve),
    });
    assert!(w.store.write_subscription(&mut record, Vec::new()).await.unwrap());
    let report = w.sweep_at(end + Duration::days(1)).await;
    assert_eq!((report.renewals.charges, report.renewals.paid), (1, 1));
    let second_attempt = renewal_invoice_id(user(2), 2, 2).unwrap();
    assert_eq!(
        w.store.invoice(&second_attempt).await.unwrap().unwrap().status,
        InvoiceStatus::Paid
    );
    let sub = w.store.subscription(user(2)).await.unwrap().unwrap();
    assert_eq!(
        (sub.status, sub.period, sub.failed_attempts),
        (SubscriptionStatus::Active, 2, 0)
    );
    assert_eq!(sub.period_end, end + PERIOD, "the renewal keeps the period's anchor");
    assert_eq!(w.entries(2, EntryKind::Renewal).await, vec![3000]);
    assert_eq!(w.available(2).await, 6000);
    let messages = w.messages().await;
    assert_eq!(
        (has(&messages, "renewed until"), messages.len()),
        (1, 1),
        "{messages:?}"
    );
    assert_eq!(w.charges.load(Ordering::SeqCst), 2);
    w.audited(2).await;
}

#[tokio::test]
async fn renewals_declined_to_the_last_attempt_end_the_subscription() {
    let w = world().await;
    let t0 = w.store.now();
    w.buy(3, CardBehaviour::Decline).await;
    w.messages().await;
    let end = t0 + PERIOD;
    w.sweep_at(end).await;
    w.sweep_at(end + Duration::days(1)).await;
    let sub = w.store.subscription(user(3)).await.unwrap().unwrap();
    assert_eq!((sub.status, sub.failed_attempts), (SubscriptionStatus::PastDue, 2));
    assert_eq!(sub.next_action_at, Some(end + Duration::days(4)), "then three days");
    let report = w.sweep_at(end + Duration::days(4)).await;
    assert_eq!((report.renewals.declined, report.renewals.expired), (1, 1));
    let sub = w.store.subscription(user(3)).await.unwrap().unwrap();
    assert_eq!((sub.status, sub.next_action_at), (SubscriptionStatus::Expired, None));
    for attempt in 1..=2 {
        let invoice = renewal_invoice_id(user(3), 2, attempt).unwrap();
        assert!(w.notified(&NotificationId::renewal_failed(&invoice)).await);
    }
    assert!(w.notified(&NotificationId::subscription_expired(user(3), 1)).await);
    let messages = w.messages().await;
    assert_eq!(has(&messages, "Could not renew"), 2, "{messages:?}");
    assert_eq!(has(&messages, "has ended"), 1, "{messages:?}");
    assert_eq!(messages.len(), 3, "{messages:?}");
    assert_eq!(w.charges.load(Ordering::SeqCst), 3, "one charge per attempt");
    assert!(w.entries(3, EntryKind::Renewal).await.is_empty());
    assert_eq!(w.available(3).await, 3000);
    // Its last renewal invoice, declined, simply runs out.
    let later = w.sweep_at(end + Duration::days(40)).await;
    assert_eq!(later.renewals, Default::default(), "expired is final");
    w.audited(3).await;

    // Buying again starts a new period from now.
    let now = w.store.now();
    w.buy(3, CardBehaviour::Approve).await;
    let sub = w.store.subscription(user(3)).await.unwrap().unwrap();
    assert_eq!(
        (sub.status, sub.period, sub.period_start),
        (SubscriptionStatus::Active, 2, now)
    );
}

#[tokio::test]
async fn cancelled_auto_renewal_reminds_then_expires_and_resuming_renews() {
    let w = world().await;
    let t0 = w.store.now();
    let end = t0 + PERIOD;
    w.buy(4, CardBehaviour::Approve).await; // cancels
    w.buy(5, CardBehaviour::Approve).await; // cancels, then resumes
    w.messages().await;
    w.set_auto_renew(4, false).await;
    w.set_auto_renew(5, false).await;

    let report = w.sweep_at(end - Duration::days(3)).await;
    assert_eq!(report.renewals.reminders, 2);
    let messages = w.messages().await;
    assert_eq!(has(&messages, "auto-renewal is off"), 2, "{messages:?}");
    assert_eq!(w.sweep().await, SweepReport::default(), "each reminder once");

    w.clock.advance(Duration::days(1));
    w.set_auto_renew(5, true).await;
    let report = w.sweep_at(end - Duration::days(1)).await;
    assert_eq!(report.renewals.reminders, 1, "only the one that will not renew");
    assert!(w.notified(&NotificationId::renewal_reminder(user(4), 1, 1)).await);
    assert!(!w.notified(&NotificationId::renewal_reminder(user(5), 1, 1)).await);
    let messages = w.messages().await;
    assert_eq!(messages.len(), 1, "{messages:?}");

    let report = w.sweep_at(end).await;
    assert_eq!(
        (report.renewals.expired, report.renewals.charges, report.renewals.paid),
        (1, 1, 1)
    );
    let cancelled = w.store.subscription(user(4)).await.unwrap().unwrap();
    assert_eq!(cancelled.status, SubscriptionStatus::Expired);
    let resumed = w.store.subscription(user(5)).await.unwrap().unwrap();
    assert_eq!((resumed.status, resumed.period), (SubscriptionStatus::Active, 2));
    let messages = w.messages().await;
    assert_eq!(
        (has(&messages, "has ended"), has(&messages, "renewed until")),
        (1, 1),
        "{messages:?}"
    );
    assert_eq!(w.entries(4, EntryKind::Renewal).await, Vec::<u64>::new());
    assert_eq!(w.entries(5, EntryKind::Renewal).await, vec![3000]);
    assert_eq!(
        w.charges.load(Ordering::SeqCst),
        1,
        "a cancelled subscription is never charged"
    );
    w.audited(4).await;
    w.audited(5).await;
}

#[tokio::test]
async fn telegram_renews_stars_subscriptions_and_a_missed_renewal_expires() {
    let w = world().await;
    let t0 = w.store.now();
    let end = t0 + PERIOD;
    let first = w.invoice(6, Provider::TelegramStars).await;
    let proof = |invoice: &Invoice, charge: &str, expires: DateTime<Utc>| PaymentProof {
        invoice_id: invoice.id.clone(),
        provider: Provider::TelegramStars,
        amount: invoice.amount_due,
        provider_ref: Some(charge.into()),
        renewal: Some(RenewalMethod::TelegramStars {
            charge_id: charge.into(),
            expires_at: Some(expires),
        }),
    };
    w.store
        .confirm_payment(&proof(&first, "charge-1", end), Vec::new())
        .await
        .unwrap();
    let sub = w.store.subscription(user(6)).await.unwrap().unwrap();
    assert_eq!((sub.period_end, sub.auto_renew), (end, true));

    // Telegram renews it at the period's end: no charge of ours, no
    // reminder; one more period, granted as a renewal, exactly once.
    assert_eq!(w.sweep_at(end).await.renewals, Default::default(), "within the grace");
    let renewal = proof(&first, "charge-2", end + PERIOD);
    let paid = join_all((0..5).map(|_| async {
        let (invoice, proof) = w.store.stars_renewal_invoice(&first, &renewal).await.unwrap();
        w.store.confirm_payment_of(invoice, &proof, Vec::new()).await.unwrap()
    }))
    .await;
    assert_eq!(paid.iter().filter(|p| !p.replayed).count(), 1);
    let sub = w.store.subscription(user(6)).await.unwrap().unwrap();
    assert_eq!((sub.period, sub.period_end), (2, end + PERIOD));
    assert_eq!(
        sub.renewal,
        Some(RenewalMethod::TelegramStars {
            charge_id: "charge-1".into(),
            expires_at: Some(end + PERIOD)
        }),
        "the first charge id names the subscription; the date moves"
    );
    assert_eq!(w.entries(6, EntryKind::Renewal).await, vec![3000]);
    // The bot publishes after each payment (tests/bot.rs); here, by hand.
    let renewal_id = tokenbill::store::stars_renewal_invoice_id("charge-2").unwrap();
    w.queue
        .publish(&[NotificationId::payment(&first.id), NotificationId::payment(&renewal_id)])
        .await
        .unwrap();
    let messages = w.messages().await;
    assert_eq!(has(&messages, "Payment received"), 1, "{messages:?}");
    assert_eq!(has(&messages, "renewed until"), 1, "{messages:?}");

    // The next renewal never comes: after the grace it expires.
    assert_eq!(w.sweep_at(end + PERIOD + Duration::hours(23)).await.renewals.expired, 0);
    let report = w.sweep_at(end + PERIOD + Duration::days(1)).await;
    assert_eq!(report.renewals.expired, 1);
    assert_eq!(report.renewals.charges, 0, "Telegram charges Stars, never the sweep");
    let sub = w.store.subscription(user(6)).await.unwrap().unwrap();
    assert_eq!(sub.status, SubscriptionStatus::Expired);
    let messages = w.messages().await;
    assert_eq!((has(&messages, "has ended"), messages.len()), (1, 1), "{messages:?}");
    assert_eq!(w.available(6).await, 6000);
    w.audited(6).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn two_concurrent_sweeps_charge_and_grant_each_of_200_subscriptions_once() {
    const USERS: i64 = 200;
    let w = world().await;
    let t0 = w.store.now();
    for chunk in (1000..1000 + USERS).collect::<Vec<_>>().chunks(25) {
        join_all(chunk.iter().map(|&id| w.buy(id, CardBehaviour::Approve))).await;
    }
    w.clock.advance(PERIOD);
    let (a, b) = tokio::join!(
        sweep(&w.store, &w.queue, &w.renewals),
        sweep(&w.store, &w.queue, &w.renewals)
    );
    let (a, b) = (a.unwrap().renewals, b.unwrap().renewals);
    assert_eq!(a.charges + b.charges, USERS as usize, "{a:?} {b:?}");
    assert_eq!(a.paid + b.paid, USERS as usize);
    assert_eq!(
        w.charges.load(Ordering::SeqCst),
        USERS as usize,
        "one provider charge each"
    );
    assert_eq!(w.sweep().await.renewals, Default::default(), "nothing left");
    let w = &w;
    let checks = join_all((1000..1000 + USERS).map(|id| async move {
        let renewals = w.entries(id, EntryKind::Renewal).await;
        let sub = w.store.subscription(user(id)).await.unwrap().unwrap();
        let audit = w.store.audit(user(id)).await.unwrap();
        (id, renewals, sub.period, sub.period_end, audit.is_ok())
    }))
    .await;
    for (id, renewals, period, period_end, audited) in checks {
        assert_eq!(renewals, vec![3000], "user {id}: granted once");
        assert_eq!((period, period_end), (2, t0 + PERIOD * 2), "user {id}");
        assert!(audited, "user {id}");
    }
}

/// A time as a schedule holds it (`at(...)`, rounded up to the second).
fn at_second(at: DateTime<Utc>) -> Option<DateTime<Utc>> {
    parse_at(&at_expression(at))
}

#[tokio::test]
async fn each_subscription_keeps_one_schedule_at_its_next_action_and_make_dev_fires_it() {
    let timers = fresh_timers().await;
    let w = world_with(Some(timers.clone())).await;
    let fire = || tokenbill_dev::fire_due_timers(&w.store, &w.queue, &w.renewals);
    // To the second a schedule fires at (its time rounded up).
    let fire_at = |at: DateTime<Utc>| {
        let at = at_second(at).unwrap();
        w.clock.advance(at - w.store.now());
        fire()
    };
    let t0 = w.store.now();
    let end = t0 + PERIOD;
    w.buy(7, CardBehaviour::Approve).await;
    w.messages().await;

    // Bought: one schedule, at the first action (the 3-day reminder),
    // deleting itself after it fires, invoking the sweep for this user.
    let schedule = timers
        .client()
        .get_schedule()
        .group_name(timers.group())
        .name("sub-7")
        .send()
        .await
        .unwrap();
    assert_eq!(
        schedule.schedule_expression(),
        Some(at_expression(end - Duration::days(3)).as_str())
    );
    assert_eq!(
        schedule.action_after_completion(),
        Some(&aws_sdk_scheduler::types::ActionAfterCompletion::Delete)
    );
    let target = schedule.target().unwrap();
    assert_eq!(
        target.arn(),
        "arn:aws:lambda:us-east-1:000000000000:function:renewal-sweep"
    );
    let input: serde_json::Value = serde_json::from_str(target.input().unwrap()).unwrap();
    assert_eq!(input, serde_json::json!({ "subscription_user": 7 }));
    assert_eq!(fire().await.unwrap(), 0, "not due yet");

    // The reminder's time: the runner fires it, the sweep of that one
    // subscription handles the reminder and moves the schedule on.
    assert_eq!(fire_at(end - Duration::days(3)).await.unwrap(), 1);
    let sub = w.store.subscription(user(7)).await.unwrap().unwrap();
    assert_eq!(sub.next_action_at, Some(end - Duration::days(1)));
    assert_eq!(
        timers.scheduled_at(user(7)).await.unwrap(),
        at_second(end - Duration::days(1))
    );
    assert_eq!(fire_at(end - Duration::days(1)).await.unwrap(), 1);
    assert_eq!(timers.scheduled_at(user(7)).await.unwrap(), at_second(end));

    // The period's end, fired: charged and renewed once; the schedule
    // moves to the next period's reminder.
    assert_eq!(fire_at(end).await.unwrap(), 1);
    assert_eq!(w.charges.load(Ordering::SeqCst), 1);
    let sub = w.store.subscription(user(7)).await.unwrap().unwrap();
    assert_eq!((sub.period, sub.period_end), (2, end + PERIOD));
    assert_eq!(
        timers.scheduled_at(user(7)).await.unwrap(),
        at_second(end + PERIOD - Duration::days(3))
    );
    assert_eq!(fire().await.unwrap(), 0, "fired once");
    assert_eq!(w.entries(7, EntryKind::Renewal).await, vec![3000]);
    let messages = w.messages().await;
    assert_eq!(
        (has(&messages, "renewed until"), messages.len()),
        (1, 1),
        "{messages:?}"
    );

    // Cancelled and past its end (the rate sweep this time): expired, and
    // the schedule is gone.
    w.set_auto_renew(7, false).await;
    let report = w.sweep_at(end + PERIOD).await;
    assert_eq!(report.renewals.expired, 1);
    assert_eq!(timers.scheduled_at(user(7)).await.unwrap(), None);
    assert_eq!(fire().await.unwrap(), 0);
    w.audited(7).await;
}

#[tokio::test]
async fn a_schedule_that_cannot_be_set_never_fails_the_purchase() {
    // A group that does not exist: every schedule call fails.
    let broken = SubscriptionTimers::new(
        tokenbill_tests::scheduler().await,
        unique_name("missing"),
        "arn:aws:lambda:us-east-1:000000000000:function:renewal-sweep",
        "arn:aws:iam::000000000000:role/tokenbill-scheduler",
    );
    let w = world_with(Some(broken.clone())).await;
    let t0 = w.store.now();
    w.buy(8, CardBehaviour::Approve).await;
    let sub = w.store.subscription(user(8)).await.unwrap().unwrap();
    assert_eq!(sub.status, SubscriptionStatus::Active);
    assert!(
        !matches!(broken.scheduled_at(user(8)).await, Ok(Some(_))),
        "no schedule was set"
    );
    // The rate sweep still renews it.
    let report = w.sweep_at(t0 + PERIOD).await;
    assert_eq!(report.renewals.paid, 1);
}
