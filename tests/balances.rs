//! Balance operations against DynamoDB Local: overdraft safety under
//! concurrency, exactly-once idempotency, holds, refunds, and audits.

use std::collections::HashSet;

use aws_sdk_dynamodb::types::{ConditionCheck, TransactWriteItem};
use chrono::Duration;
use futures::future::join_all;
use rand::{Rng, SeedableRng};
use tokenbill::domain::ledger::{CreditKind, DebitKind};
use tokenbill::domain::{Balance, DomainError, EntryKind};
use tokenbill::store::{BalanceRequest, StoreError};
use tokenbill::{ManualClock, Store};
use tokenbill_tests::{fresh_store, key, tokens, user};

async fn credit(store: &Store, id: i64, amount: u64, idempotency: &str) -> tokenbill::store::Applied {
    store
        .apply(BalanceRequest::credit(
            user(id),
            CreditKind::Grant,
            tokens(amount),
            key(idempotency),
        ))
        .await
        .expect("credit")
}

async fn available(store: &Store, id: i64) -> u64 {
    store.balance(user(id)).await.expect("balance").0.available.get()
}

async fn assert_audit_ok(store: &Store, id: i64) -> Balance {
    let report = store.audit(user(id)).await.expect("audit");
    assert!(report.is_ok(), "audit found problems: {:?}", report.problems);
    report.account
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_debits_never_overdraw() {
    let store = fresh_store().await;
    let start = 10_000;
    credit(&store, 1, start, "seed").await;

    let mut rng = rand::rngs::StdRng::seed_from_u64(0x70CE_B111);
    let amounts: Vec<u64> = (0..200).map(|_| rng.random_range(1..=120)).collect();
    let requested: u64 = amounts.iter().sum();
    assert!(requested > start, "the test must ask for more than the balance holds");

    let results = join_all(amounts.iter().enumerate().map(|(i, amount)| {
        let store = store.clone();
        let amount = *amount;
        tokio::spawn(async move {
            let request = BalanceRequest::debit(user(1), DebitKind::Spend, tokens(amount), key(format!("debit-{i}")));
            (amount, store.apply(request).await)
        })
    }))
    .await;

    let mut spent = 0;
    let mut refused = 0;
    for result in results {
        match result.expect("task") {
            (amount, Ok(applied)) => {
                assert!(!applied.replayed);
                assert_eq!(applied.receipt.amount, tokens(amount));
                spent += amount;
            }
            (amount, Err(StoreError::Domain(DomainError::InsufficientTokens { available, requested }))) => {
                assert_eq!(requested, tokens(amount));
                assert!(available < requested, "refused although {available} covers {requested}");
                refused += 1;
            }
            (_, Err(other)) => panic!("unexpected error: {other}"),
        }
    }
    assert!(refused > 0, "some debits must have been refused");
    let balance = assert_audit_ok(&store, 1).await;
    assert_eq!(
        balance.available.get(),
        start - spent,
        "balance = start - sum of successful debits"
    );
    assert_eq!(balance.held, tokens(0));
    // Every successful debit has its own ledger entry, and no refused one does.
    let (_, entries) = store.balance(user(1)).await.unwrap();
    assert_eq!(entries, 1 + (200 - refused));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replayed_credits_apply_once_and_answer_the_same() {
    let store = fresh_store().await;
    let first = credit(&store, 2, 500, "invoice:abc").await;
    assert!(!first.replayed);

    for _ in 0..25 {
        let again = credit(&store, 2, 500, "invoice:abc").await;
        assert!(again.replayed);
        assert_eq!(
            again.receipt, first.receipt,
            "a replay answers exactly as the first call did"
        );
    }
    let concurrent = join_all((0..25).map(|_| {
        let store = store.clone();
        tokio::spawn(async move { credit(&store, 2, 500, "invoice:abc").await })
    }))
    .await;
    for applied in concurrent {
        assert_eq!(applied.expect("task").receipt, first.receipt);
    }
    let balance = assert_audit_ok(&store, 2).await;
    assert_eq!(balance.available, tokens(500), "50 replays credited once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_first_calls_with_one_key_credit_once() {
    let store = fresh_store().await;
    let results = join_all((0..50).map(|_| {
        let store = store.clone();
        tokio::spawn(async move { credit(&store, 3, 70, "race").await })
    }))
    .await;
    let receipts: HashSet<_> = results.into_iter().map(|r| r.expect("task").receipt.tx_id).collect();
    assert_eq!(receipts.len(), 1, "every caller got the one transaction");
    assert_eq!(assert_audit_ok(&store, 3).await.available, tokens(70));
}

#[tokio::test]
async fn a_key_reused_for_another_amount_is_refused_without_effect() {
    let store = fresh_store().await;
    credit(&store, 4, 100, "k1").await;
    let other = store
        .apply(BalanceRequest::credit(
            user(4),
            CreditKind::Grant,
            tokens(101),
            key("k1"),
        ))
        .await;
    assert!(matches!(other, Err(StoreError::KeyReused { .. })), "got {other:?}");
    let other_kind = store
        .apply(BalanceRequest::debit(user(4), DebitKind::Spend, tokens(100), key("k1")))
        .await;
    assert!(
        matches!(other_kind, Err(StoreError::KeyReused { .. })),
        "got {other_kind:?}"
    );
    assert_eq!(assert_audit_ok(&store, 4).await.available, tokens(100));
}

#[tokio::test]
async fn insufficient_balance_reports_what_is_available() {
    let store = fresh_store().await;
    credit(&store, 5, 30, "seed").await;
    let err = store
        .apply(BalanceRequest::debit(user(5), DebitKind::Spend, tokens(31), key("big")))
        .await
        .unwrap_err();
    match err {
        StoreError::Domain(DomainError::InsufficientTokens { available, requested }) => {
            assert_eq!((available, requested), (tokens(30), tokens(31)));
        }
        other => panic!("unexpected {other}"),
    }
    assert!(!StoreError::Domain(DomainError::ZeroTokens).is_retryable());
    // A user who never had tokens has none to spend.
    let err = store
        .apply(BalanceRequest::debit(user(6), DebitKind::Spend, tokens(1), key("x")))
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        StoreError::Domain(DomainError::InsufficientTokens { .. })
    ));
    // The refused key is not burnt: it works once the balance allows.
    credit(&store, 5, 1, "top-up").await;
    let applied = store
        .apply(BalanceRequest::debit(user(5), DebitKind::Spend, tokens(31), key("big")))
        .await
        .unwrap();
    assert_eq!(applied.receipt.amount, tokens(31));
    assert_eq!(available(&store, 5).await, 0);
    assert_audit_ok(&store, 5).await;
}

#[tokio::test]
async fn holds_capture_release_and_expire() {
    let clock = ManualClock::new(chrono::Utc::now());
    let store = fresh_store().await.with_clock(std::sync::Arc::new(clock.clone()));
    credit(&store, 7, 1000, "seed").await;

    let hold = store
        .apply(BalanceRequest::hold(
            user(7),
            tokens(300),
            Duration::seconds(60),
            key("h1"),
        ))
        .await
        .unwrap();
    let hold_id = hold.receipt.tx_id;
    assert_eq!(
        store.balance(user(7)).await.unwrap().0,
        Balance {
            available: tokens(700),
            held: tokens(300)
        }
    );
    assert_eq!(
        hold.receipt.expires_at,
        Some(tokenbill::Clock::now(&clock) + Duration::seconds(60))
    );

    // Capture 120: 180 flow back to available.
    let captured = store
        .apply(BalanceRequest::capture(hold_id, tokens(120), key("c1")))
        .await
        .unwrap();
    assert_eq!(
        (captured.receipt.kind, captured.receipt.amount),
        (EntryKind::Capture, tokens(120))
    );
    assert_eq!(
        store.balance(user(7)).await.unwrap().0,
        Balance {
            available: tokens(880),
            held: tokens(0)
        }
    );
    // The hold is closed: a second capture or release is refused.
    let again = store
        .apply(BalanceRequest::capture(hold_id, tokens(1), key("c2")))
        .await
        .unwrap_err();
    assert!(
        matches!(again, StoreError::Domain(DomainError::HoldNotActive { .. })),
        "{again}"
    );
    let release = store
        .apply(BalanceRequest::release(hold_id, key("r1")))
        .await
        .unwrap_err();
    assert!(
        matches!(release, StoreError::Domain(DomainError::HoldNotActive { .. })),
        "{release}"
    );

    // A second hold is released in full.
    let second = store
        .apply(BalanceRequest::hold(
            user(7),
            tokens(80),
            Duration::seconds(60),
            key("h2"),
        ))
        .await
        .unwrap();
    let released = store
        .apply(BalanceRequest::release(second.receipt.tx_id, key("r2")))
        .await
        .unwrap();
    assert_eq!(
        (released.receipt.kind, released.receipt.amount),
        (EntryKind::Release, tokens(80))
    );
    assert_eq!(
        store.balance(user(7)).await.unwrap().0,
        Balance {
            available: tokens(880),
            held: tokens(0)
        }
    );

    // An expired hold cannot be captured, only released.
    let third = store
        .apply(BalanceRequest::hold(
            user(7),
            tokens(50),
            Duration::seconds(10),
            key("h3"),
        ))
        .await
        .unwrap();
    clock.advance(Duration::seconds(11));
    let late = store
        .apply(BalanceRequest::capture(third.receipt.tx_id, tokens(50), key("c3")))
        .await
        .unwrap_err();
    assert!(
        matches!(late, StoreError::Domain(DomainError::HoldExpired { .. })),
        "{late}"
    );
    store
        .apply(BalanceRequest::release(third.receipt.tx_id, key("r3")))
        .await
        .unwrap();

    // Over-capture is refused; holds of other users are not found.
    let fourth = store
        .apply(BalanceRequest::hold(
            user(7),
            tokens(10),
            Duration::seconds(60),
            key("h4"),
        ))
        .await
        .unwrap();
    let over = store
        .apply(BalanceRequest::capture(fourth.receipt.tx_id, tokens(11), key("c4")))
        .await
        .unwrap_err();
    assert!(
        matches!(over, StoreError::Domain(DomainError::CaptureExceedsHold { .. })),
        "{over}"
    );
    let foreign = tokenbill::domain::TxId {
        user: user(8),
        id: fourth.receipt.tx_id.id,
    };
    let missing = store
        .apply(BalanceRequest::release(foreign, key("r4")))
        .await
        .unwrap_err();
    assert!(matches!(missing, StoreError::NotFound { .. }), "{missing}");

    let balance = assert_audit_ok(&store, 7).await;
    assert_eq!(
        balance,
        Balance {
            available: tokens(870),
            held: tokens(10)
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_captures_of_one_hold_take_it_once() {
    let store = fresh_store().await;
    credit(&store, 9, 100, "seed").await;
    let hold = store
        .apply(BalanceRequest::hold(
            user(9),
            tokens(100),
            Duration::seconds(60),
            key("h"),
        ))
        .await
        .unwrap();
    let results = join_all((0..20).map(|i| {
        let store = store.clone();
        let hold_id = hold.receipt.tx_id;
        tokio::spawn(async move {
            store
                .apply(BalanceRequest::capture(hold_id, tokens(40), key(format!("c{i}"))))
                .await
        })
    }))
    .await;
    let captured = results.into_iter().filter(|r| matches!(r, Ok(Ok(_)))).count();
    assert_eq!(captured, 1);
    assert_eq!(
        assert_audit_ok(&store, 9).await,
        Balance {
            available: tokens(60),
            held: tokens(0)
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refunds_never_exceed_the_original() {
    let store = fresh_store().await;
    let seed = credit(&store, 10, 100, "seed").await;
    let spend = store
        .apply(BalanceRequest::debit(user(10), DebitKind::Spend, tokens(60), key("s")))
        .await
        .unwrap();
    let original = spend.receipt.tx_id;

    let results = join_all((0..10).map(|i| {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .apply(BalanceRequest::refund(original, tokens(25), key(format!("r{i}"))))
                .await
        })
    }))
    .await;
    let refunded = results.into_iter().filter(|r| matches!(r, Ok(Ok(_)))).count();
    assert_eq!(refunded, 2, "60 tokens allow two refunds of 25");
    let rest = store
        .apply(BalanceRequest::refund(original, tokens(11), key("rest")))
        .await
        .unwrap_err();
    assert!(
        matches!(rest, StoreError::Domain(DomainError::RefundExceedsRemaining { .. })),
        "{rest}"
    );
    store
        .apply(BalanceRequest::refund(original, tokens(10), key("rest2")))
        .await
        .unwrap();
    // A credit is not refundable.
    let not = store
        .apply(BalanceRequest::refund(seed.receipt.tx_id, tokens(1), key("n")))
        .await;
    assert!(
        matches!(not, Err(StoreError::Domain(DomainError::NotRefundable { .. }))),
        "{not:?}"
    );
    assert_eq!(assert_audit_ok(&store, 10).await.available, tokens(100));

    let page = store.ledger_page(user(10), None, 2).await.unwrap();
    assert_eq!(
        page.entries.iter().map(|e| e.kind).collect::<Vec<_>>(),
        [EntryKind::Refund, EntryKind::Refund]
    );
    assert_eq!(page.entries[0].refund_of, Some(original));
    let next = store.ledger_page(user(10), page.next, 10).await.unwrap();
    assert_eq!(
        next.entries.len(),
        3,
        "2 refunds + spend + seed = 5 entries minus the first page"
    );
    assert_eq!(next.entries.last().unwrap().kind, EntryKind::Grant);
    assert!(next.next.is_none());
}

#[tokio::test]
async fn extra_items_commit_with_the_balance_or_not_at_all() {
    let store = fresh_store().await;
    // An extra condition that fails (a missing item) cancels everything.
    let missing = ConditionCheck::builder()
        .table_name(store.table())
        .set_key(Some(tokenbill::store::keys::tariff(&"nope".parse().unwrap()).to_item()))
        .condition_expression("attribute_exists(pk)")
        .build()
        .unwrap();
    let request = BalanceRequest::credit(user(11), CreditKind::Purchase, tokens(10), key("p"))
        .with_item(TransactWriteItem::builder().condition_check(missing).build());
    let err = store.apply(request).await.unwrap_err();
    assert!(
        matches!(err, StoreError::ExtraConditionFailed { index: 0, .. }),
        "{err}"
    );
    let (balance, seq) = store.balance(user(11)).await.unwrap();
    assert_eq!((balance.available, seq), (tokens(0), 0), "nothing was written");
}
