//! Subscriptions as stored: one item per user, `USER#<id>` / `SUBSCRIPTION`,
//! holding the [`Subscription`] and the renewal flow's bookkeeping
//! ([`RenewalState`]). While something is due it sits in the sparse `due`
//! index (`SUBSCRIPTION_DUE#<user mod 8>`, `due_at` = its next action), so
//! the renewal sweep reads only what is due. Every write is a whole-item
//! put conditioned on the revision it read, inside the transaction of its
//! cause (a payment, a reminder with its notification, a charge with its
//! invoice, an auto-renew switch with the update's mark).

use aws_sdk_dynamodb::types::{Put, TransactWriteItem};
use sha2::Digest;

use super::item::{Item, n, parse, record, s};
use super::keys;
use super::{DEFAULT_INVOICE_TTL, PaymentProof, Store, StoreError};
use crate::domain::invoice::{Invoice, InvoiceStatus, Provider};
use crate::domain::subscription::{PeriodPurchase, RenewalMethod, RenewalState, Subscription, SubscriptionRecord};
use crate::domain::tariff::DEFAULT_PERIOD_DAYS;
use crate::domain::{DomainError, InvoiceId, Money, UserId};

/// The renewal invoice of `period` (the one being bought), charge `attempt`:
/// one id per (subscription, period, attempt), so however many sweeps try,
/// one invoice exists and is charged.
pub fn renewal_invoice_id(user: UserId, period: u32, attempt: u32) -> Result<InvoiceId, DomainError> {
    InvoiceId::new(format!("ren-{user}-{period}-{attempt}"))
}

/// The invoice of a Stars renewal Telegram charged, named by its charge id
/// (hashed: charge ids are long and may hold any character).
pub fn stars_renewal_invoice_id(charge_id: &str) -> Result<InvoiceId, DomainError> {
    let digest = hex::encode(sha2::Sha256::digest(charge_id.as_bytes()));
    InvoiceId::new(format!("stars-{}", &digest[..40]))
}

impl Store {
    pub async fn subscription(&self, user: UserId) -> Result<Option<Subscription>, StoreError> {
        self.get_record(&keys::subscription(user), "subscription", false).await
    }

    /// The subscription with its bookkeeping, read consistently (every
    /// write that follows is conditioned on this read's revision).
    pub async fn subscription_record(&self, user: UserId) -> Result<Option<SubscriptionRecord>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(self.table())
            .set_key(Some(keys::subscription(user).to_item()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| StoreError::from_sdk("GetItem", e))?;
        output.item.map(parse_record).transpose()
    }

    /// The put of `record`, written only if the stored revision is still
    /// `read` (`None`: only if there is no subscription yet). The item
    /// carries revision `read + 1`.
    pub fn put_subscription_item(
        &self,
        record: &SubscriptionRecord,
        read: Option<u64>,
    ) -> Result<TransactWriteItem, StoreError> {
        let mut state = record.state.clone();
        state.revision = read.map_or(1, |r| r + 1);
        let mut item: Item = record_item(&record.subscription, &state)?;
        if let Some(at) = record.subscription.next_action_at {
            item.insert(keys::DUE_PK.into(), s(keys::subscription_due(record.subscription.user)));
            item.insert(keys::DUE_AT.into(), n(at.timestamp()));
        }
        let put = Put::builder()
            .table_name(self.table())
            .set_item(Some(item))
            .expression_attribute_names("#pk", keys::PK);
        let put = match read {
            None => put.condition_expression("attribute_not_exists(#pk)"),
            // Items written before revisions existed count as revision 0.
            Some(0) => put
                .condition_expression("attribute_exists(#pk) AND (attribute_not_exists(#rev) OR #rev = :rev)")
                .expression_attribute_names("#rev", "revision")
                .expression_attribute_values(":rev", n(0)),
            Some(revision) => put
                .condition_expression("attribute_exists(#pk) AND #rev = :rev")
                .expression_attribute_names("#rev", "revision")
                .expression_attribute_values(":rev", n(revision)),
        };
        let put = put.build().map_err(|e| StoreError::corrupt("subscription put", e))?;
        Ok(TransactWriteItem::builder().put(put).build())
    }

    /// Writes `record` over the revision it was read at, with `extra` items
    /// in the same transaction. False, with nothing written, when another
    /// writer got there first (read again and decide again). On success the
    /// record's revision is the stored one.
    pub async fn write_subscription(
        &self,
        record: &mut SubscriptionRecord,
        extra: Vec<TransactWriteItem>,
    ) -> Result<bool, StoreError> {
        let read = record.state.revision;
        let mut items = vec![self.put_subscription_item(record, Some(read))?];
        items.extend(extra);
        match self.transact(items).await? {
            Ok(()) => {
                record.state.revision = read + 1;
                self.retime_subscription(&record.subscription).await;
                Ok(true)
            }
            Err(cancelled) => {
                if !cancelled.failed(0) {
                    // The revision held but an item of the cause did not
                    // (its notification or invoice exists): that cause was
                    // already written, which only a racing writer of the
                    // same revision could do; read again like a lost race.
                    tracing::warn!(user = %record.subscription.user, "subscription write refused by an extra item");
                }
                Ok(false)
            }
        }
    }

    /// Moves the subscription's one-time schedule to its next action time
    /// (deletes it when none) after a write. Never fails: a schedule that
    /// could not be set is left to the rate sweep.
    pub async fn retime_subscription(&self, subscription: &Subscription) {
        if let Some(timers) = self.timers() {
            timers.retime(subscription.user, subscription.next_action_at).await;
        }
    }

    /// Turns auto-renewal on or off ([`SubscriptionRecord::set_auto_renew`]
    /// moves the next action with it) over the revision read, with `extra`
    /// items in the same transaction, and moves the schedule. `None` when
    /// there is no subscription to switch.
    pub async fn switch_auto_renew(
        &self,
        user: UserId,
        on: bool,
        extra: Vec<TransactWriteItem>,
    ) -> Result<Option<Subscription>, StoreError> {
        // A sweep may write the record between our read and write; a few
        // rereads settle it.
        for _ in 0..3 {
            let Some(mut record) = self.subscription_record(user).await? else {
                return Ok(None);
            };
            record.set_auto_renew(on, self.now());
            if self.write_subscription(&mut record, extra.clone()).await? {
                return Ok(Some(record.subscription));
            }
        }
        Err(StoreError::Contention {
            what: format!("subscription of user {user}"),
        })
    }

    /// Takes a renewal charge: the subscription (with its charge in flight,
    /// see [`SubscriptionRecord::start_charge`]) over the revision read and,
    /// for a first try, the new renewal invoice (`attribute_not_exists`),
    /// in one transaction. Only the sweep whose transaction commits asks
    /// the provider; false for every other.
    pub async fn claim_renewal_charge(
        &self,
        record: &mut SubscriptionRecord,
        new_invoice: Option<&Invoice>,
    ) -> Result<bool, StoreError> {
        let extra = match new_invoice {
            Some(invoice) => vec![self.put_invoice(invoice, None)?],
            None => Vec::new(),
        };
        self.write_subscription(record, extra).await
    }

    /// Users whose subscription has something due at `now`, from the
    /// sparse `due` index: up to `per_shard` from each shard, soonest
    /// first. Never a scan: the cost follows what is due.
    pub async fn due_subscriptions(
        &self,
        now: chrono::DateTime<chrono::Utc>,
        per_shard: i32,
    ) -> Result<Vec<UserId>, StoreError> {
        let mut users = Vec::new();
        for shard in 0..keys::SUBSCRIPTION_DUE_SHARDS {
            let due: Vec<Subscription> = self
                .due_items(&keys::subscription_due_partition(shard), now, per_shard, "subscription")
                .await?;
            users.extend(due.into_iter().map(|sub| sub.user));
        }
        Ok(users)
    }

    /// The subscription item after paying `paid` (a subscription tariff's
    /// invoice, now paid), for the payment's transaction: the subscription
    /// created or extended by one period, with the renewal method the
    /// payment kept. `None` for other invoices.
    pub(super) async fn subscription_payment_item(
        &self,
        paid: &Invoice,
    ) -> Result<Option<(TransactWriteItem, SubscriptionRecord)>, StoreError> {
        let Some(terms) = period_of(paid) else {
            return Ok(None);
        };
        let existing = self.subscription_record(paid.user).await?;
        let read = existing.as_ref().map(|record| record.state.revision);
        let record = SubscriptionRecord::after_payment(existing, paid, terms, paid.renewal.clone(), self.now());
        Ok(Some((self.put_subscription_item(&record, read)?, record)))
    }

    /// The invoice that records a Stars renewal Telegram charged by itself
    /// (`first` is the subscription's first invoice, which the payment's
    /// payload names), created once per charge id, and the proof that pays
    /// it. Paying it (`confirm_payment_of`) credits the period's tokens as
    /// a `renewal` entry and extends the subscription, exactly once.
    pub async fn stars_renewal_invoice(
        &self,
        first: &Invoice,
        proof: &PaymentProof,
    ) -> Result<(Invoice, PaymentProof), StoreError> {
        let charge_id = proof
            .provider_ref
            .clone()
            .ok_or_else(|| DomainError::invalid("stars renewal", "no charge id"))?;
        let id = stars_renewal_invoice_id(&charge_id)?;
        // The subscription keeps the first charge id (editUserStarSubscription
        // names it by that) and learns the new expiration date.
        let stored;
        let first = if first.renewal.is_none() {
            // The caller's copy may predate the first payment.
            stored = self.existing_invoice(&first.id).await?;
            &stored
        } else {
            first
        };
        let first_charge = match &first.renewal {
            Some(RenewalMethod::TelegramStars { charge_id, .. }) => Some(charge_id.clone()),
            _ => first.provider_ref.clone(),
        };
        let renewal = match (&proof.renewal, first_charge) {
            (Some(RenewalMethod::TelegramStars { expires_at, .. }), Some(charge_id)) => {
                Some(RenewalMethod::TelegramStars {
                    charge_id,
                    expires_at: *expires_at,
                })
            }
            (method, _) => method.clone(),
        };
        let paid_proof = PaymentProof {
            invoice_id: id.clone(),
            renewal,
            ..proof.clone()
        };
        if let Some(existing) = self.invoice(&id).await? {
            return Ok((existing, paid_proof));
        }
        let now = self.now();
        let period_days = first.period.map_or(DEFAULT_PERIOD_DAYS, |p| p.period_days);
        let invoice = Invoice {
            id: id.clone(),
            user: first.user,
            tariff_id: first.tariff_id.clone(),
            title: first.title.clone(),
            tokens: first.tokens,
            bonus_tokens: crate::domain::Tokens::ZERO,
            // Telegram charges every period what the first one cost.
            price: first.amount_due,
            discount: Money::zero(first.amount_due.currency()),
            amount_due: first.amount_due,
            provider: Provider::TelegramStars,
            promo_code: None,
            promo_reserved: false,
            status: InvoiceStatus::Pending,
            paid_late: false,
            created_at: now,
            expires_at: now + DEFAULT_INVOICE_TTL,
            paid_at: None,
            provider_ref: Some(charge_id),
            recurring: false,
            renewal: None,
            period: Some(PeriodPurchase {
                period_days,
                renewal: true,
            }),
        };
        match self.transact(vec![self.put_invoice(&invoice, None)?]).await? {
            Ok(()) => Ok((invoice, paid_proof)),
            // Created by a concurrent delivery of the same payment.
            Err(_) => Ok((self.existing_invoice(&id).await?, paid_proof)),
        }
    }
}

/// What a paid invoice buys as a subscription: its period snapshot, or,
/// for a subscription invoice made before periods were snapshotted, the
/// default period.
pub(super) fn period_of(invoice: &Invoice) -> Option<PeriodPurchase> {
    invoice.period.or_else(|| {
        invoice.recurring.then_some(PeriodPurchase {
            period_days: DEFAULT_PERIOD_DAYS,
            renewal: false,
        })
    })
}

fn record_item(subscription: &Subscription, state: &RenewalState) -> Result<Item, StoreError> {
    let mut item = record(&keys::subscription(subscription.user), "subscription", subscription)?;
    let extra: Item = serde_dynamo::to_item(state).map_err(|e| StoreError::corrupt("subscription state", e))?;
    item.extend(extra);
    Ok(item)
}

fn parse_record(item: Item) -> Result<SubscriptionRecord, StoreError> {
    Ok(SubscriptionRecord {
        subscription: parse("subscription", item.clone())?,
        state: parse("subscription state", item)?,
    })
}
