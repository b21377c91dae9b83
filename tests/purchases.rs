//! Invoices and promo codes against DynamoDB Local: limits under
//! concurrency, redemptions given back, exactly-once payment, price
//! snapshots, and every reason a code is refused.

use std::sync::Arc;

use chrono::{Duration, Utc};
use futures::future::join_all;
use rust_decimal::Decimal;
use tokenbill::domain::invoice::{InvoiceStatus, Provider};
use tokenbill::domain::promo::{PromoCode, PromoCodeText, PromoEffect, PromoRejection};
use tokenbill::domain::{Currency, DomainError, Money, TariffId};
use tokenbill::store::{DEFAULT_INVOICE_TTL, NewInvoice, StoreError};
use tokenbill::{ManualClock, Store};
use tokenbill_tests::{fresh_store, register, seed_catalog, tokens, user};

fn code(text: &str) -> PromoCodeText {
    PromoCodeText::new(text).unwrap()
}

fn promo(text: &str, effect: PromoEffect) -> PromoCode {
    PromoCode::new(code(text), effect)
}

fn ten_percent(text: &str) -> PromoCode {
    promo(text, PromoEffect::PercentDiscount { percent: Decimal::TEN })
}

fn order(id: i64, promo: Option<&str>) -> NewInvoice {
    NewInvoice {
        user: user(id),
        tariff_id: TariffId::new("pack_100").unwrap(),
        provider: Provider::Mock,
        promo: promo.map(code),
    }
}

async fn shop() -> Store {
    let store = fresh_store().await;
    seed_catalog(&store).await;
    store
}

async fn redemptions(store: &Store, text: &str) -> (u64, u64) {
    let promo = store.promo(&code(text)).await.unwrap().unwrap();
    (promo.redemptions, promo.paid_redemptions)
}

fn rejection(result: Result<impl std::fmt::Debug, StoreError>) -> PromoRejection {
    match result {
        Err(StoreError::Promo(reason)) => reason,
        other => panic!("expected a promo rejection, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_code_limited_to_ten_is_used_ten_times_by_a_hundred_users() {
    let store = shop().await;
    let mut limited = ten_percent("LIMIT10");
    limited.max_redemptions = Some(10);
    assert!(store.create_promo(&limited).await.unwrap());
    for id in 1..=100 {
        register(&store, id).await;
    }
    let results = join_all((1..=100).map(|id| {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .create_invoice(order(id, Some("LIMIT10")), DEFAULT_INVOICE_TTL)
                .await
        })
    }))
    .await;
    let mut used = 0;
    for result in results {
        match result.unwrap() {
            Ok(invoice) => {
                assert_eq!(invoice.discount, Money::parse("9.90", Currency::Rub).unwrap());
                used += 1;
            }
            Err(StoreError::Promo(PromoRejection::Exhausted)) => {}
            Err(other) => panic!("unexpected {other}"),
        }
    }
    assert_eq!(used, 10);
    assert_eq!(redemptions(&store, "LIMIT10").await, (10, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_per_user_limit_holds_under_concurrent_attempts() {
    let store = shop().await;
    let mut twice = ten_percent("TWICE");
    twice.per_user_limit = 2;
    store.create_promo(&twice).await.unwrap();
    register(&store, 1).await;
    let results = join_all((0..20).map(|_| {
        let store = store.clone();
        tokio::spawn(async move { store.create_invoice(order(1, Some("TWICE")), DEFAULT_INVOICE_TTL).await })
    }))
    .await;
    let mut used = 0;
    for result in results {
        match result.unwrap() {
            Ok(_) => used += 1,
            Err(StoreError::Promo(PromoRejection::AlreadyUsed)) => {}
            Err(other) => panic!("unexpected {other}"),
        }
    }
    assert_eq!(used, 2);
    assert_eq!(store.promo_uses(&code("TWICE"), user(1)).await.unwrap(), 2);
}

#[tokio::test]
async fn expired_and_cancelled_invoices_give_their_redemption_back() {
    let clock = ManualClock::new(Utc::now());
    let store = shop().await.with_clock(Arc::new(clock.clone()));
    let mut once = ten_percent("ONCE");
    once.max_redemptions = Some(1);
    store.create_promo(&once).await.unwrap();
    for id in [1, 2] {
        register(&store, id).await;
    }

    let first = store
        .create_invoice(order(1, Some("ONCE")), DEFAULT_INVOICE_TTL)
        .await
        .unwrap();
    assert!(first.promo_reserved);
    assert_eq!(
        rejection(store.create_invoice(order(2, Some("ONCE")), DEFAULT_INVOICE_TTL).await),
        PromoRejection::Exhausted
    );

    // Only the owner can cancel.
    assert!(matches!(
        store.cancel_invoice(&first.id, user(2)).await,
        Err(StoreError::NotFound { .. })
    ));
    let cancelled = store.cancel_invoice(&first.id, user(1)).await.unwrap();
    assert_eq!(cancelled.status, InvoiceStatus::Cancelled);
    assert_eq!(redemptions(&store, "ONCE").await, (0, 0));
    assert_eq!(store.promo_uses(&code("ONCE"), user(1)).await.unwrap(), 0);
    let again = store.cancel_invoice(&first.id, user(1)).await;
    assert!(
        matches!(
            again,
            Err(StoreError::Domain(DomainError::InvalidInvoiceTransition { .. }))
        ),
        "{again:?}"
    );
    assert_eq!(
        redemptions(&store, "ONCE").await,
        (0, 0),
        "a second cancel gives nothing back twice"
    );

    let second = store
        .create_invoice(order(2, Some("ONCE")), Duration::minutes(30))
        .await
        .unwrap();
    assert_eq!(redemptions(&store, "ONCE").await, (1, 0));
    let early = store.expire_invoice(&second.id).await;
    assert!(early.is_err(), "an invoice cannot expire before its time");
    assert!(
        store
            .expired_pending_invoices(clock_now(&clock), 10)
            .await
            .unwrap()
            .is_empty()
    );

    clock.advance(Duration::minutes(31));
    let due = store.expired_pending_invoices(clock_now(&clock), 10).await.unwrap();
    assert_eq!(due, vec![second.id.clone()]);
    let expired = store.expire_invoice(&second.id).await.unwrap();
    assert_eq!(expired.status, InvoiceStatus::Expired);
    assert_eq!(redemptions(&store, "ONCE").await, (0, 0));
    assert_eq!(
        store.expire_invoice(&second.id).await.unwrap(),
        expired,
        "expiring again is a no-op"
    );
    assert!(
        store
            .expired_pending_invoices(clock_now(&clock), 10)
            .await
            .unwrap()
            .is_empty(),
        "the due index forgets it"
    );
}

fn clock_now(clock: &ManualClock) -> chrono::DateTime<Utc> {
    tokenbill::Clock::now(clock)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_paid_invoice_is_credited_once() {
    let store = shop().await;
    register(&store, 1).await;
    let invoice = store.create_invoice(order(1, None), DEFAULT_INVOICE_TTL).await.unwrap();
    let payments = join_all((0..10).map(|_| {
        let store = store.clone();
        let id = invoice.id.clone();
        tokio::spawn(async move { store.pay_invoice(&id, Some("provider-ref".into())).await })
    }))
    .await;
    let payments: Vec<_> = payments.into_iter().map(|p| p.unwrap().unwrap()).collect();
    assert_eq!(
        payments.iter().filter(|p| !p.replayed).count(),
        1,
        "one payment credits"
    );
    assert!(
        payments.iter().all(|p| p.receipt == payments[0].receipt),
        "every answer is the first one"
    );
    assert!(payments.iter().all(|p| p.invoice.status == InvoiceStatus::Paid));

    let (balance, _) = store.balance(user(1)).await.unwrap();
    assert_eq!(balance.available, tokens(100));
    assert!(store.audit(user(1)).await.unwrap().is_ok());
    assert_eq!(store.existing_user(user(1)).await.unwrap().paid_invoices, 1);
    let stored = store.invoice(&invoice.id).await.unwrap().unwrap();
    assert_eq!(
        (stored.status, stored.paid_late, stored.provider_ref.as_deref()),
        (InvoiceStatus::Paid, false, Some("provider-ref"))
    );

    let cancel = store.cancel_invoice(&invoice.id, user(1)).await;
    assert!(matches!(
        cancel,
        Err(StoreError::Domain(DomainError::InvalidInvoiceTransition { .. }))
    ));
    let again = store.pay_invoice(&invoice.id, None).await.unwrap();
    assert!(again.replayed);
    assert_eq!(store.balance(user(1)).await.unwrap().0.available, tokens(100));
}

#[tokio::test]
async fn a_late_payment_is_credited_and_counts_its_redemption() {
    let clock = ManualClock::new(Utc::now());
    let store = shop().await.with_clock(Arc::new(clock.clone()));
    let mut once = ten_percent("LATE");
    once.max_redemptions = Some(1);
    store.create_promo(&once).await.unwrap();
    register(&store, 1).await;
    register(&store, 2).await;
    let invoice = store
        .create_invoice(order(1, Some("LATE")), DEFAULT_INVOICE_TTL)
        .await
        .unwrap();
    clock.advance(DEFAULT_INVOICE_TTL + Duration::seconds(1));
    store.expire_invoice(&invoice.id).await.unwrap();
    store
        .create_invoice(order(2, Some("LATE")), DEFAULT_INVOICE_TTL)
        .await
        .unwrap();
    assert_eq!(redemptions(&store, "LATE").await, (1, 0));

    // The provider took the money after the invoice expired: honour it.
    let payment = store.pay_invoice(&invoice.id, None).await.unwrap();
    assert_eq!(
        (payment.invoice.status, payment.invoice.paid_late),
        (InvoiceStatus::Paid, true)
    );
    assert_eq!(
        payment.invoice.amount_due,
        Money::parse("89.10", Currency::Rub).unwrap()
    );
    assert_eq!(store.balance(user(1)).await.unwrap().0.available, tokens(100));
    assert_eq!(
        redemptions(&store, "LATE").await,
        (2, 1),
        "the late use counts, past the limit"
    );
}

#[tokio::test]
async fn an_invoice_keeps_its_price_when_the_catalog_changes() {
    let store = shop().await;
    register(&store, 1).await;
    let invoice = store.create_invoice(order(1, None), DEFAULT_INVOICE_TTL).await.unwrap();
    assert_eq!(invoice.amount_due, Money::parse("99", Currency::Rub).unwrap());

    let mut tariff = store
        .tariff(&TariffId::new("pack_100").unwrap())
        .await
        .unwrap()
        .unwrap();
    tariff.prices.insert(Currency::Rub, Decimal::new(14900, 2));
    tariff.tokens = tokens(90);
    tariff.title.en = "Renamed".into();
    store.put_tariffs(&[tariff]).await.unwrap();

    let stored = store.invoice(&invoice.id).await.unwrap().unwrap();
    assert_eq!(stored, invoice, "the invoice is a snapshot");
    store.pay_invoice(&invoice.id, None).await.unwrap();
    assert_eq!(
        store.balance(user(1)).await.unwrap().0.available,
        tokens(100),
        "the tokens bought, not today's"
    );
    let fresh = store.create_invoice(order(1, None), DEFAULT_INVOICE_TTL).await.unwrap();
    assert_eq!(
        (fresh.amount_due.amount(), fresh.tokens),
        (Decimal::new(14900, 2), tokens(90))
    );
}

#[tokio::test]
async fn every_refused_code_says_why() {
    let store = shop().await;
    let now = Utc::now();
    register(&store, 1).await;
    register(&store, 2).await;

    let mut disabled = ten_percent("DISABLED");
    disabled.active = false;
    let mut future = ten_percent("FUTURE");
    future.valid_from = Some(now + Duration::days(1));
    let mut past = ten_percent("PAST");
    past.valid_until = Some(now - Duration::days(1));
    let mut gone = ten_percent("GONE");
    gone.max_redemptions = Some(1);
    let mut first = ten_percent("FIRST");
    first.first_purchase_only = true;
    let mut subs = ten_percent("SUBSONLY");
    subs.allowed_tariffs = vec![TariffId::new("sub_month").unwrap()];
    let mut big = ten_percent("BIGONLY");
    big.min_amount = Some(Money::parse("500", Currency::Rub).unwrap());
    for promo in [disabled, future, past, gone, first, subs, big, ten_percent("USED")] {
        assert!(store.create_promo(&promo).await.unwrap());
    }
    assert!(
        !store.create_promo(&ten_percent("USED")).await.unwrap(),
        "a code is created once"
    );

    // Use up GONE (by user 2) and USED (by user 1); give user 1 a paid purchase.
    store
        .create_invoice(order(2, Some("GONE")), DEFAULT_INVOICE_TTL)
        .await
        .unwrap();
    let used = store
        .create_invoice(order(1, Some("USED")), DEFAULT_INVOICE_TTL)
        .await
        .unwrap();
    store.pay_invoice(&used.id, None).await.unwrap();

    let cases = [
        ("NOSUCHCODE", PromoRejection::NotFound),
        ("DISABLED", PromoRejection::Inactive),
        ("FUTURE", PromoRejection::NotYetValid),
        ("PAST", PromoRejection::Expired),
        ("GONE", PromoRejection::Exhausted),
        ("USED", PromoRejection::AlreadyUsed),
        ("FIRST", PromoRejection::FirstPurchaseOnly),
        ("SUBSONLY", PromoRejection::TariffNotAllowed),
        ("BIGONLY", PromoRejection::BelowMinimum),
    ];
    let mut seen = std::collections::HashSet::new();
    for (text, expected) in cases {
        let got = rejection(store.create_invoice(order(1, Some(text)), DEFAULT_INVOICE_TTL).await);
        assert_eq!(got, expected, "{text}");
        assert!(seen.insert(got.to_string()), "{text}: each reason has its own words");
    }
    // The same code works where its rules allow: user 2 has bought nothing yet.
    store
        .create_invoice(order(2, Some("FIRST")), DEFAULT_INVOICE_TTL)
        .await
        .unwrap();
    let sub = NewInvoice {
        tariff_id: TariffId::new("sub_month").unwrap(),
        ..order(2, Some("SUBSONLY"))
    };
    store.create_invoice(sub, DEFAULT_INVOICE_TTL).await.unwrap();
}

#[tokio::test]
async fn a_full_discount_completes_without_a_provider() {
    let store = shop().await;
    register(&store, 1).await;
    store
        .create_promo(&promo(
            "FREE",
            PromoEffect::PercentDiscount {
                percent: Decimal::ONE_HUNDRED,
            },
        ))
        .await
        .unwrap();
    let invoice = store
        .create_invoice(order(1, Some("FREE")), DEFAULT_INVOICE_TTL)
        .await
        .unwrap();
    assert_eq!(
        (invoice.status, invoice.provider),
        (InvoiceStatus::Paid, Provider::Free)
    );
    assert!(invoice.amount_due.is_zero());
    assert_eq!(store.balance(user(1)).await.unwrap().0.available, tokens(100));
    assert_eq!(redemptions(&store, "FREE").await, (1, 1));
}

#[tokio::test]
async fn token_codes_grant_tokens() {
    let store = shop().await;
    let ann = register(&store, 1).await;
    store
        .create_promo(&promo("BONUS50", PromoEffect::BonusTokens { tokens: tokens(50) }))
        .await
        .unwrap();
    store
        .create_promo(&promo("MORE20", PromoEffect::ExtraTokens { percent: 20 }))
        .await
        .unwrap();

    let activation = store.activate_promo(&ann, &code("BONUS50")).await.unwrap();
    assert_eq!(activation.applied.receipt.amount, tokens(50));
    assert_eq!(
        rejection(store.activate_promo(&ann, &code("BONUS50")).await),
        PromoRejection::AlreadyUsed
    );
    let discount_code = store.activate_promo(&ann, &code("MORE20")).await;
    assert!(
        matches!(discount_code, Err(StoreError::Domain(_))),
        "a purchase code is not activated alone"
    );

    let invoice = store
        .create_invoice(order(1, Some("MORE20")), DEFAULT_INVOICE_TTL)
        .await
        .unwrap();
    assert_eq!((invoice.tokens, invoice.bonus_tokens), (tokens(100), tokens(20)));
    store.pay_invoice(&invoice.id, None).await.unwrap();
    assert_eq!(store.balance(user(1)).await.unwrap().0.available, tokens(170));
    assert!(store.audit(user(1)).await.unwrap().is_ok());
}

#[tokio::test]
async fn stars_invoices_use_the_stars_price_and_inactive_tariffs_cannot_be_bought() {
    let store = shop().await;
    register(&store, 1).await;
    let stars = NewInvoice {
        provider: Provider::TelegramStars,
        ..order(1, None)
    };
    let invoice = store.create_invoice(stars, DEFAULT_INVOICE_TTL).await.unwrap();
    assert_eq!(invoice.amount_due, Money::parse("50", Currency::Xtr).unwrap());

    store
        .set_tariff_active(&TariffId::new("pack_100").unwrap(), false)
        .await
        .unwrap();
    assert!(matches!(
        store.create_invoice(order(1, None), DEFAULT_INVOICE_TTL).await,
        Err(StoreError::NotFound { .. })
    ));
    let unknown = store.create_invoice(order(99, None), DEFAULT_INVOICE_TTL).await;
    assert!(
        matches!(unknown, Err(StoreError::NotFound { .. })),
        "unregistered users cannot buy"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn robokassa_invoice_ids_are_unique_and_bounded() {
    let store = fresh_store().await;
    let ids = join_all((0..50).map(|_| {
        let store = store.clone();
        tokio::spawn(async move { store.next_robokassa_inv_id().await.unwrap() })
    }))
    .await;
    let ids: std::collections::BTreeSet<u32> = ids.into_iter().map(Result::unwrap).collect();
    assert_eq!(ids, (1..=50).collect());

    for expected in 1..=3 {
        assert_eq!(store.next_counter("small", 3).await.unwrap(), expected);
    }
    assert!(
        store.next_counter("small", 3).await.is_err(),
        "a counter never passes its maximum"
    );
}
