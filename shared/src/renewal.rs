//! Subscription renewals: what the sweep does with each subscription that
//! has something due (reminders, renewal charges, dunning, expiry).
//!
//! The rules are pure ([`SubscriptionRecord::step`]); this module carries
//! them out. Every change is one transaction of the subscription (put over
//! the revision it read) with what it causes — the notification, the
//! renewal invoice — so a sweep that loses a race writes nothing and
//! decides again from what won, and a sweep that dies between two steps
//! leaves a state the next one continues from.
//!
//! Exactly once: a renewal invoice has one id per (subscription, period,
//! attempt), created in the transaction that takes the charge; only the
//! sweep whose transaction commits asks the provider. Its payment credits
//! through the one payment path (idempotency key `invoice:<id>`), which
//! also extends the subscription in the same transaction. A sweep that
//! dies after taking the charge leaves it in flight for [`CHARGE_LEASE`];
//! the next one charges the same invoice again, which a provider pays at
//! most once.
//!
//! [`CHARGE_LEASE`]: crate::domain::subscription::CHARGE_LEASE

use chrono::{DateTime, Duration, Utc};
use futures::StreamExt;

use crate::domain::invoice::{Invoice, InvoiceStatus};
use crate::domain::notification::{Message, Notification, NotificationId};
use crate::domain::subscription::{ExpiryReason, PeriodPurchase, RenewalMethod, Step, SubscriptionRecord};
use crate::domain::tariff::{Localized, Tariff};
use crate::domain::{DomainError, InvoiceId, Tokens, UserId, pricing};
use crate::payments::{ChargeOutcome, RecurringCharge, Renewals};
use crate::queue::NotificationQueue;
use crate::store::{Store, StoreError, renewal_invoice_id};

/// Due subscriptions read per `due` shard per sweep (8 shards); the rest
/// wait for the next tick.
pub const SUBSCRIPTIONS_PER_SHARD: i32 = 250;
/// Subscriptions one sweep advances at once.
const PARALLEL: usize = 16;
/// Reads and decides again after a lost race at most this often.
const ATTEMPTS: usize = 6;
/// How long a renewal invoice waits for its payment (a Robokassa charge is
/// confirmed later by ResultURL; a late confirmation is still credited).
pub const RENEWAL_INVOICE_TTL: Duration = Duration::days(1);

/// What advancing subscriptions did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct RenewalReport {
    /// Reminders sent (those due while the period renews by itself are
    /// only marked handled).
    pub reminders: usize,
    /// Charges asked of a provider.
    pub charges: usize,
    /// Charges the provider paid at once (credited and extended by the
    /// payment path).
    pub paid: usize,
    /// Charges the provider accepted, to be confirmed by its callback.
    pub accepted: usize,
    /// Charges declined or never confirmed (dunning continues).
    pub declined: usize,
    /// Subscriptions that ended.
    pub expired: usize,
}

impl std::ops::AddAssign for RenewalReport {
    fn add_assign(&mut self, other: Self) {
        self.reminders += other.reminders;
        self.charges += other.charges;
        self.paid += other.paid;
        self.accepted += other.accepted;
        self.declined += other.declined;
        self.expired += other.expired;
    }
}

/// Advances every subscription with something due (from the sparse `due`
/// index, never a scan). A failing one is logged and the others go on;
/// the first failure is returned after them.
pub async fn renew_due(
    store: &Store,
    renewals: &Renewals,
    queue: Option<&NotificationQueue>,
) -> Result<RenewalReport, StoreError> {
    let users = store.due_subscriptions(store.now(), SUBSCRIPTIONS_PER_SHARD).await?;
    let results: Vec<_> = futures::stream::iter(users)
        .map(|user| async move { (user, advance(store, renewals, queue, user).await) })
        .buffer_unordered(PARALLEL)
        .collect()
        .await;
    let mut report = RenewalReport::default();
    let mut first_failure = None;
    for (user, result) in results {
        match result {
            Ok(done) => report += done,
            Err(err) => {
                tracing::error!(%user, error = %err, "could not advance the subscription");
                first_failure.get_or_insert(err);
            }
        }
    }
    match first_failure {
        Some(err) => Err(err),
        None => Ok(report),
    }
}

/// Does what is due for `user`'s subscription now (nothing if nothing is).
/// Safe to call any number of times, from any number of sweeps at once.
pub async fn advance(
    store: &Store,
    renewals: &Renewals,
    queue: Option<&NotificationQueue>,
    user: UserId,
) -> Result<RenewalReport, StoreError> {
    let mut report = RenewalReport::default();
    for _ in 0..ATTEMPTS {
        let Some(mut record) = store.subscription_record(user).await? else {
            return Ok(report);
        };
        let now = store.now();
        let chargeable = record
            .subscription
            .renewal
            .as_ref()
            .is_some_and(|method| renewals.can_charge(method));
        match record.step(now, chargeable) {
            Step::Wait => {
                // Woken early or late (a schedule written before a change):
                // only move the next action time.
                let before = record.subscription.next_action_at;
                record.schedule(now);
                if record.subscription.next_action_at == before || store.write_subscription(&mut record, vec![]).await?
                {
                    return Ok(report);
                }
            }
            Step::Remind { days, notify, sent } => {
                let (period, period_end) = (record.subscription.period, record.subscription.period_end);
                record.remind(sent, now);
                let mut notifications = Vec::new();
                if notify {
                    notifications.push(Notification::new(
                        NotificationId::renewal_reminder(user, period, days),
                        user,
                        Message::RenewalReminder {
                            title: title(store, &record).await?,
                            days,
                            period_end,
                            auto_renew: record.subscription.auto_renew,
                        },
                        now,
                    ));
                }
                if commit(store, queue, &mut record, notifications).await? {
                    report.reminders += usize::from(notify);
                    return Ok(report);
                }
            }
            Step::Expire(reason) => {
                let notification = expired_notification(store, &record, reason, now).await?;
                record.expire();
                if commit(store, queue, &mut record, vec![notification]).await? {
                    report.expired += 1;
                    return Ok(report);
                }
            }
            Step::Unconfirmed { invoice } => {
                tracing::warn!(%user, %invoice, "an accepted renewal charge was never confirmed");
                return settle_failure(store, queue, record, &invoice, report).await;
            }
            Step::Charge { attempt, again } => {
                if let Some(done) = charge(store, renewals, queue, record, attempt, again, &mut report).await? {
                    return Ok(done);
                }
            }
        }
    }
    Err(StoreError::Contention {
        what: format!("subscription of {user}"),
    })
}

/// Takes the charge of the next period and asks the provider. `None`: the
/// charge was taken by another sweep first (read again).
async fn charge(
    store: &Store,
    renewals: &Renewals,
    queue: Option<&NotificationQueue>,
    mut record: SubscriptionRecord,
    attempt: u32,
    again: Option<InvoiceId>,
    report: &mut RenewalReport,
) -> Result<Option<RenewalReport>, StoreError> {
    let user = record.subscription.user;
    let now = store.now();
    let Some(method) = record.subscription.renewal.clone() else {
        return Err(StoreError::corrupt(
            format!("subscription of {user}"),
            "chargeable without a method",
        ));
    };
    let (invoice, new) = match again {
        Some(id) => (
            store.invoice(&id).await?.ok_or_else(|| StoreError::NotFound {
                what: format!("invoice {id}"),
            })?,
            false,
        ),
        None => {
            let tariff = store.tariff(&record.subscription.tariff_id).await?;
            match tariff.map(|tariff| renewal_invoice(&record, &tariff, &method, attempt, now)) {
                Some(Ok(invoice)) => (invoice, true),
                // The tariff is gone or has no price for the method's
                // currency: nothing can be charged, the subscription ends.
                missing => {
                    tracing::warn!(%user, problem = ?missing.map(|r| r.err()), "no renewal price; expiring");
                    let notification = expired_notification(store, &record, ExpiryReason::NoPaymentMethod, now).await?;
                    record.expire();
                    if !commit(store, queue, &mut record, vec![notification]).await? {
                        return Ok(None);
                    }
                    report.expired += 1;
                    return Ok(Some(*report));
                }
            }
        }
    };
    record.start_charge(invoice.id.clone(), attempt, now);
    if !store.claim_renewal_charge(&mut record, new.then_some(&invoice)).await? {
        return Ok(None);
    }
    report.charges += 1;
    let outcome = renewals.charge_again(&method, &invoice).await;
    tracing::info!(%user, invoice = %invoice.id, attempt, ?outcome, "renewal charged");
    match outcome {
        // Credited, and the subscription extended, by the payment path.
        Ok(ChargeOutcome::Paid { .. }) => report.paid += 1,
        Ok(ChargeOutcome::Accepted { .. }) => {
            report.accepted += 1;
            settle(store, record, &invoice.id, |r| r.charge_accepted(now)).await?;
        }
        Ok(ChargeOutcome::Unavailable { reason }) => {
            tracing::warn!(%user, invoice = %invoice.id, reason, "provider unavailable; charging again later");
            settle(store, record, &invoice.id, |r| r.charge_unavailable(now)).await?;
        }
        Err(err) if err.is_retryable() => {
            tracing::warn!(%user, invoice = %invoice.id, error = %err, "charge failed; charging again later");
            settle(store, record, &invoice.id, |r| r.charge_unavailable(now)).await?;
        }
        Ok(ChargeOutcome::Declined { reason }) => {
            tracing::info!(%user, invoice = %invoice.id, reason, "renewal declined");
            *report = settle_failure(store, queue, record, &invoice.id, *report).await?;
        }
        // The request itself was refused (configuration, a closed invoice):
        // repeating it would not help, so it counts as a failed attempt.
        Err(err) => {
            tracing::error!(%user, invoice = %invoice.id, error = %err, "renewal charge refused");
            *report = settle_failure(store, queue, record, &invoice.id, *report).await?;
        }
    }
    Ok(Some(*report))
}

/// Applies `change` to the subscription while its charge in flight is
/// still `invoice` (a payment that arrived meanwhile settled it already).
async fn settle(
    store: &Store,
    mut record: SubscriptionRecord,
    invoice: &InvoiceId,
    change: impl Fn(&mut SubscriptionRecord),
) -> Result<(), StoreError> {
    for _ in 0..ATTEMPTS {
        if record
            .state
            .charge
            .as_ref()
            .is_none_or(|charge| &charge.invoice != invoice)
        {
            return Ok(());
        }
        change(&mut record);
        if store.write_subscription(&mut record, vec![]).await? {
            return Ok(());
        }
        let user = record.subscription.user;
        match store.subscription_record(user).await? {
            Some(fresh) => record = fresh,
            None => return Ok(()),
        }
    }
    Err(StoreError::Contention {
        what: format!("subscription of {}", record.subscription.user),
    })
}

/// Records a declined (or unconfirmed) charge with its notification: the
/// next dunning attempt, or the end.
async fn settle_failure(
    store: &Store,
    queue: Option<&NotificationQueue>,
    mut record: SubscriptionRecord,
    invoice: &InvoiceId,
    mut report: RenewalReport,
) -> Result<RenewalReport, StoreError> {
    let user = record.subscription.user;
    for _ in 0..ATTEMPTS {
        if record
            .state
            .charge
            .as_ref()
            .is_none_or(|charge| &charge.invoice != invoice)
        {
            return Ok(report);
        }
        let now = store.now();
        let before = record.clone();
        let notification = match record.charge_failed(now) {
            Some(next_attempt) => Notification::new(
                NotificationId::renewal_failed(invoice),
                user,
                Message::RenewalFailed {
                    title: title(store, &record).await?,
                    next_attempt,
                },
                now,
            ),
            None => expired_notification(store, &before, ExpiryReason::PaymentFailed, now).await?,
        };
        let expired = record.subscription.next_action_at.is_none();
        if commit(store, queue, &mut record, vec![notification]).await? {
            report.declined += 1;
            report.expired += usize::from(expired);
            return Ok(report);
        }
        match store.subscription_record(user).await? {
            Some(fresh) => record = fresh,
            None => return Ok(report),
        }
    }
    Err(StoreError::Contention {
        what: format!("subscription of {user}"),
    })
}

/// Writes the subscription with its notifications in one transaction and
/// publishes them after the commit (a lost publish is the outbox sweep's).
async fn commit(
    store: &Store,
    queue: Option<&NotificationQueue>,
    record: &mut SubscriptionRecord,
    notifications: Vec<Notification>,
) -> Result<bool, StoreError> {
    let items = notifications
        .iter()
        .map(|notification| store.notification_item(notification))
        .collect::<Result<Vec<_>, _>>()?;
    if !store.write_subscription(record, items).await? {
        return Ok(false);
    }
    if let Some(queue) = queue
        && !notifications.is_empty()
    {
        let ids: Vec<_> = notifications.into_iter().map(|n| n.id).collect();
        queue.publish_or_log(&ids).await;
    }
    Ok(true)
}

async fn expired_notification(
    store: &Store,
    record: &SubscriptionRecord,
    reason: ExpiryReason,
    now: DateTime<Utc>,
) -> Result<Notification, StoreError> {
    let user = record.subscription.user;
    Ok(Notification::new(
        NotificationId::subscription_expired(user, record.subscription.period),
        user,
        Message::SubscriptionExpired {
            title: title(store, record).await?,
            reason,
        },
        now,
    ))
}

/// The subscription's name for messages: its tariff's title, or its id if
/// the tariff is gone.
async fn title(store: &Store, record: &SubscriptionRecord) -> Result<Localized, StoreError> {
    let id = &record.subscription.tariff_id;
    Ok(store.tariff(id).await?.map_or_else(
        || Localized {
            ru: id.to_string(),
            en: id.to_string(),
        },
        |tariff| tariff.title,
    ))
}

/// The invoice of the next period's charge `attempt`: the tariff's current
/// price in the method's currency, the subscription's tokens per period.
pub fn renewal_invoice(
    record: &SubscriptionRecord,
    tariff: &Tariff,
    method: &RenewalMethod,
    attempt: u32,
    now: DateTime<Utc>,
) -> Result<Invoice, DomainError> {
    let sub = &record.subscription;
    let provider = method.provider();
    let quote = pricing::quote(tariff, provider.currency(), None)?;
    Ok(Invoice {
        id: renewal_invoice_id(sub.user, sub.period + 1, attempt)?,
        user: sub.user,
        tariff_id: sub.tariff_id.clone(),
        title: tariff.title.clone(),
        tokens: sub.tokens_per_period,
        bonus_tokens: Tokens::ZERO,
        price: quote.price,
        discount: quote.discount,
        amount_due: quote.amount_due,
        provider,
        promo_code: None,
        promo_reserved: false,
        status: InvoiceStatus::Pending,
        paid_late: false,
        created_at: now,
        expires_at: now + RENEWAL_INVOICE_TTL,
        paid_at: None,
        provider_ref: None,
        // Charged against the kept method; never a new Robokassa parent.
        recurring: false,
        renewal: None,
        period: Some(PeriodPurchase {
            period_days: sub.period_days,
            renewal: true,
        }),
    })
}
