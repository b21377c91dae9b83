//! The periodic sweep: work that is due because time passed, not because
//! a request arrived. Every step is safe to repeat and to run on several
//! instances at once (each write is conditional), so a sweep that fails
//! halfway is simply run again by the next tick.

use crate::domain::UserId;
use crate::payments::Renewals;
use crate::queue::{NotificationQueue, republish_undelivered};
use crate::renewal::{RenewalReport, advance, renew_due};
use crate::store::{Store, StoreError};

/// Invoices closed per sweep at most; the rest wait for the next tick.
const INVOICES_PER_SWEEP: i32 = 200;
/// Expired holds given back per sweep at most.
const HOLDS_PER_SWEEP: i32 = 500;

/// What one sweep did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct SweepReport {
    /// Pending invoices whose time ran out, now expired (promo redemptions
    /// given back).
    pub invoices_expired: usize,
    /// Spend API holds whose time ran out, their tokens given back.
    pub holds_released: usize,
    /// Outbox notifications published again (never reached the queue, or
    /// their sender died).
    pub notifications_republished: usize,
    /// Subscriptions advanced: reminders, renewal charges, dunning, expiry.
    pub renewals: RenewalReport,
}

/// Runs every step. A failing item is logged and skipped (the others go
/// on) and the sweep then reports the first failure, so the function's
/// error alarm sees it; the next tick retries it.
/// `renewals` charges subscriptions again (the providers this deployment
/// configures).
pub async fn sweep(store: &Store, queue: &NotificationQueue, renewals: &Renewals) -> Result<SweepReport, StoreError> {
    let mut report = SweepReport::default();
    let mut first_failure = None;
    match renew_due(store, renewals, Some(queue)).await {
        Ok(renewed) => report.renewals = renewed,
        Err(err) => {
            first_failure.get_or_insert(err);
        }
    }
    for id in store.expired_pending_invoices(store.now(), INVOICES_PER_SWEEP).await? {
        // One invoice that fails must not hold back the others.
        match store.expire_invoice(&id).await {
            Ok(_) => report.invoices_expired += 1,
            Err(err) => {
                tracing::error!(invoice = %id, error = %err, "could not expire the invoice");
                first_failure.get_or_insert(err);
            }
        }
    }
    match release_expired_holds(store).await {
        Ok(released) => report.holds_released = released,
        Err(err) => {
            first_failure.get_or_insert(err);
        }
    }
    report.notifications_republished = republish_undelivered(store, queue).await?;
    match first_failure {
        Some(err) => Err(err),
        None => Ok(report),
    }
}

/// What a subscription's one-time schedule asks for
/// ([`crate::timers::TimerEvent`]): that subscription only, through the
/// same exactly-once path as the rate sweep.
pub async fn sweep_subscription(
    store: &Store,
    queue: &NotificationQueue,
    renewals: &Renewals,
    user: UserId,
) -> Result<RenewalReport, StoreError> {
    let report = advance(store, renewals, Some(queue), user).await?;
    // The schedule that fired deletes itself, and a wake-up with nothing
    // due writes nothing: set it again from what is stored.
    if store.timers().is_some()
        && let Some(record) = store.subscription_record(user).await?
    {
        store.retime_subscription(&record.subscription).await;
    }
    Ok(report)
}

/// Gives back the tokens of spend API holds whose time ran out and that
/// nobody touched since (a crashed caller's). A failing hold is logged and
/// the others go on; the first failure is returned after them.
pub async fn release_expired_holds(store: &Store) -> Result<usize, StoreError> {
    let mut released = 0;
    let mut first_failure = None;
    for hold in store.expired_holds(HOLDS_PER_SWEEP).await? {
        match store.release_expired_hold(hold).await {
            Ok(done) => released += usize::from(done),
            Err(err) => {
                tracing::error!(hold = %hold, error = %err, "could not release the expired hold");
                first_failure.get_or_insert(err);
            }
        }
    }
    match first_failure {
        Some(err) => Err(err),
        None => Ok(released),
    }
}
