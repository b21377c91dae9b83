//! Subscriptions as data, and the pure rules of their lifecycle: what a
//! payment does to one, and what is due when (reminders, renewal charges,
//! dunning, expiry). The renewal sweep (`crate::renewal`) carries the
//! decisions out; the store writes each one in one transaction.
//!
//! ```text
//! (none) --paid--> active --period end, charged--> active (period + 1)
//! active --period end, declined--> past_due --paid--> active
//! past_due --declined, last attempt--> expired
//! active --period end, auto-renew off or no way to charge--> expired
//! active (Stars) --no renewal by end + grace--> expired
//! expired --paid again--> active (a new period from now)
//! ```

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use super::invoice::Invoice;
use super::{InvoiceId, TariffId, Tokens, UserId};

/// Reminders before a period ends, in days: sent when the period will not
/// renew by itself (auto-renewal off, or no way to charge).
pub const REMINDER_DAYS: [i64; 2] = [3, 1];
/// Waits after the 1st and 2nd declined charge of a period; the 3rd
/// declined charge ends the subscription.
pub const DUNNING_DELAYS_DAYS: [i64; 2] = [1, 3];
/// Charges of one period before it expires.
pub const MAX_CHARGE_ATTEMPTS: u32 = 3;
/// How long after a Stars period's end Telegram's renewal may still arrive.
pub const STARS_GRACE: Duration = Duration::days(1);
/// How long one sweep owns a charge it started; a sweep that died meanwhile
/// leaves it to the next one, which charges the same invoice again (a
/// provider pays one invoice at most once).
pub const CHARGE_LEASE: Duration = Duration::minutes(10);
/// How long an accepted charge (Robokassa) may wait for its confirming
/// callback before it counts as declined.
pub const ACCEPTED_WAIT: Duration = Duration::hours(6);
/// When to ask a provider that could not answer again (same invoice, same attempt).
pub const UNAVAILABLE_RETRY: Duration = Duration::minutes(15);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubscriptionStatus {
    Active,
    /// A renewal charge failed; retries are scheduled (dunning).
    PastDue,
    Expired,
}

/// How the next period can be charged without the user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RenewalMethod {
    Mock {
        recurring_token: String,
    },
    Robokassa {
        parent_inv_id: u32,
    },
    /// Telegram renews Stars subscriptions itself; we only observe payments.
    TelegramStars {
        /// The first payment's `telegram_payment_charge_id`
        /// (`editUserStarSubscription` names the subscription by it).
        charge_id: String,
        /// `subscription_expiration_date`: when Telegram charges next.
        #[serde(default)]
        expires_at: Option<DateTime<Utc>>,
    },
}

impl RenewalMethod {
    /// The provider that kept the method (and issues its renewal invoices).
    pub fn provider(&self) -> super::invoice::Provider {
        match self {
            RenewalMethod::Mock { .. } => super::invoice::Provider::Mock,
            RenewalMethod::Robokassa { .. } => super::invoice::Provider::Robokassa,
            RenewalMethod::TelegramStars { .. } => super::invoice::Provider::TelegramStars,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    pub user: UserId,
    pub tariff_id: TariffId,
    pub status: SubscriptionStatus,
    /// 1 for the first period, +1 on every renewal.
    pub period: u32,
    pub period_start: DateTime<Utc>,
    pub period_end: DateTime<Utc>,
    pub period_days: u32,
    pub tokens_per_period: Tokens,
    pub auto_renew: bool,
    pub renewal: Option<RenewalMethod>,
    pub failed_attempts: u32,
    /// When the sweep must look at this subscription next; `None` when
    /// nothing is due (the sparse index then omits it).
    pub next_action_at: Option<DateTime<Utc>>,
}

impl Subscription {
    /// The end of a period that starts at `start`.
    pub fn period_end_from(start: DateTime<Utc>, period_days: u32) -> DateTime<Utc> {
        start + Duration::days(i64::from(period_days))
    }

    /// Buying again while active adds a period to the end; it never
    /// shortens what was already paid for. A subscription that is active or
    /// past due keeps its anchor (the next period starts where the last
    /// ended); an expired one restarts now.
    pub fn extend(&mut self, now: DateTime<Utc>) {
        let start = match self.status {
            SubscriptionStatus::Expired => self.period_end.max(now),
            SubscriptionStatus::Active | SubscriptionStatus::PastDue => self.period_end,
        };
        // A period that would already be over (the sweep stood still for a
        // whole period) starts now instead.
        let start = if Self::period_end_from(start, self.period_days) <= now {
            now
        } else {
            start
        };
        self.period += 1;
        self.period_start = start;
        self.period_end = Self::period_end_from(start, self.period_days);
        self.status = SubscriptionStatus::Active;
        self.failed_attempts = 0;
    }

    /// True for a subscription Telegram renews (Stars).
    pub fn is_stars(&self) -> bool {
        matches!(self.renewal, Some(RenewalMethod::TelegramStars { .. }))
    }
}

/// What an invoice buys when its tariff is a subscription (a snapshot, like
/// its price: the catalog may change later).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeriodPurchase {
    pub period_days: u32,
    /// A later period (charged by the sweep, or by Telegram for Stars): its
    /// tokens are a `renewal` ledger entry, not a `purchase`.
    #[serde(default)]
    pub renewal: bool,
}

/// A renewal charge one sweep started and has not finished.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChargeInFlight {
    /// The renewal invoice, `ren-<user>-<period>-<attempt>`.
    pub invoice: InvoiceId,
    pub attempt: u32,
    /// The provider took it for processing; its callback confirms it.
    #[serde(default)]
    pub accepted: bool,
    /// Nobody else acts on it before this time.
    pub until: DateTime<Utc>,
}

/// The renewal flow's bookkeeping, stored beside the subscription's own
/// attributes in the same item.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenewalState {
    /// +1 on every write: each write is conditioned on the one it read, so
    /// concurrent sweeps and payments never overwrite each other.
    #[serde(default)]
    pub revision: u64,
    /// Reminders of the current period already handled (0..=2).
    #[serde(default)]
    pub reminders_sent: u32,
    #[serde(default)]
    pub charge: Option<ChargeInFlight>,
}

/// Why a subscription ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExpiryReason {
    /// Auto-renewal was off at the period's end.
    Cancelled,
    /// No saved way to charge (or its provider is not available here).
    NoPaymentMethod,
    /// Every charge attempt of the period was declined.
    PaymentFailed,
    /// Telegram did not renew the Stars subscription in time.
    StarsNotRenewed,
}

/// What the sweep must do with a subscription now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Nothing is due.
    Wait,
    /// The reminder `days` before the end; `notify` when the period will
    /// not renew by itself. `sent` is the new count of handled reminders.
    Remind {
        days: i64,
        notify: bool,
        sent: u32,
    },
    /// Charge the next period: attempt `attempt`, with a new invoice, or
    /// again with `again` (its sweep died before it finished).
    Charge {
        attempt: u32,
        again: Option<InvoiceId>,
    },
    /// The accepted charge was never confirmed: it counts as declined.
    Unconfirmed {
        invoice: InvoiceId,
    },
    Expire(ExpiryReason),
}

/// A subscription with its renewal bookkeeping, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionRecord {
    pub subscription: Subscription,
    pub state: RenewalState,
}

impl SubscriptionRecord {
    /// What a paid invoice of a subscription tariff makes of `existing`:
    /// a new subscription, or the one there extended by a period (never
    /// overwritten, never shortened). `method` is the renewal method the
    /// payment kept, if any.
    pub fn after_payment(
        existing: Option<SubscriptionRecord>,
        invoice: &Invoice,
        terms: PeriodPurchase,
        method: Option<RenewalMethod>,
        now: DateTime<Utc>,
    ) -> SubscriptionRecord {
        let mut record = match existing {
            None => SubscriptionRecord {
                subscription: Subscription {
                    user: invoice.user,
                    tariff_id: invoice.tariff_id.clone(),
                    status: SubscriptionStatus::Active,
                    period: 1,
                    period_start: now,
                    period_end: Subscription::period_end_from(now, terms.period_days),
                    period_days: terms.period_days,
                    tokens_per_period: invoice.tokens,
                    auto_renew: method.is_some(),
                    renewal: method,
                    failed_attempts: 0,
                    next_action_at: None,
                },
                state: RenewalState::default(),
            },
            Some(mut record) => {
                let sub = &mut record.subscription;
                let lapsed = sub.status == SubscriptionStatus::Expired;
                sub.tariff_id = invoice.tariff_id.clone();
                sub.period_days = terms.period_days;
                sub.tokens_per_period = invoice.tokens;
                sub.extend(now);
                if lapsed {
                    // A fresh start renews the way it was paid, if at all.
                    sub.auto_renew = method.is_some();
                    sub.renewal = method;
                } else if let Some(method) = method {
                    sub.renewal = Some(method);
                }
                record.state.reminders_sent = 0;
                // Any payment ends a charge in flight: its late outcome is
                // ignored, a late payment of it extends once more (paid twice,
                // two periods).
                record.state.charge = None;
                record
            }
        };
        record.schedule(now);
        record
    }

    /// Sets `next_action_at` for an active subscription from its period:
    /// the next reminder still ahead of `now`, else the period's end (plus
    /// the grace for Stars). A charge in flight is looked at when its time
    /// runs out; a past-due one at its dunning time (set when the charge
    /// failed).
    pub fn schedule(&mut self, now: DateTime<Utc>) {
        let sub = &mut self.subscription;
        sub.next_action_at = match (&self.state.charge, sub.status) {
            (_, SubscriptionStatus::Expired) => None,
            (Some(charge), _) => Some(charge.until),
            (None, SubscriptionStatus::PastDue) => sub.next_action_at,
            (None, SubscriptionStatus::Active) => {
                let reminder = REMINDER_DAYS
                    .iter()
                    .skip(self.state.reminders_sent as usize)
                    .map(|days| sub.period_end - Duration::days(*days))
                    .find(|at| *at > now);
                let end = if sub.is_stars() && sub.auto_renew {
                    sub.period_end + STARS_GRACE
                } else {
                    sub.period_end
                };
                Some(reminder.map_or(end, |at| at.min(end)))
            }
        };
    }

    /// What is due at `now`. `chargeable`: this deployment can charge the
    /// saved method (a mock card or Robokassa parent whose provider is
    /// configured).
    pub fn step(&self, now: DateTime<Utc>, chargeable: bool) -> Step {
        let sub = &self.subscription;
        if sub.status == SubscriptionStatus::Expired {
            return Step::Wait;
        }
        if let Some(charge) = &self.state.charge {
            return match (now < charge.until, charge.accepted) {
                (true, _) => Step::Wait,
                (false, true) => Step::Unconfirmed {
                    invoice: charge.invoice.clone(),
                },
                (false, false) => Step::Charge {
                    attempt: charge.attempt,
                    again: Some(charge.invoice.clone()),
                },
            };
        }
        let stars = sub.is_stars();
        let renews = sub.auto_renew && (stars || chargeable);
        let charge_or_expire = || {
            if !sub.auto_renew {
                Step::Expire(ExpiryReason::Cancelled)
            } else if !chargeable {
                Step::Expire(ExpiryReason::NoPaymentMethod)
            } else {
                Step::Charge {
                    attempt: sub.failed_attempts + 1,
                    again: None,
                }
            }
        };
        match sub.status {
            SubscriptionStatus::Active if now < sub.period_end => {
                // The latest reminder due; an earlier one missed meanwhile
                // is skipped rather than sent late.
                let due = (self.state.reminders_sent as usize..REMINDER_DAYS.len())
                    .rev()
                    .find(|&i| now >= sub.period_end - Duration::days(REMINDER_DAYS[i]));
                match due {
                    Some(i) => Step::Remind {
                        days: REMINDER_DAYS[i],
                        notify: !renews,
                        sent: i as u32 + 1,
                    },
                    None => Step::Wait,
                }
            }
            SubscriptionStatus::Active if stars && sub.auto_renew => {
                if now >= sub.period_end + STARS_GRACE {
                    Step::Expire(ExpiryReason::StarsNotRenewed)
                } else {
                    Step::Wait
                }
            }
            SubscriptionStatus::Active => charge_or_expire(),
            SubscriptionStatus::PastDue if sub.next_action_at.is_some_and(|at| now < at) => Step::Wait,
            SubscriptionStatus::PastDue => charge_or_expire(),
            SubscriptionStatus::Expired => Step::Wait,
        }
    }

    /// A sweep takes the charge of `invoice` for [`CHARGE_LEASE`].
    pub fn start_charge(&mut self, invoice: InvoiceId, attempt: u32, now: DateTime<Utc>) {
        self.state.charge = Some(ChargeInFlight {
            invoice,
            attempt,
            accepted: false,
            until: now + CHARGE_LEASE,
        });
        self.schedule(now);
    }

    /// The provider accepted the charge; its callback will confirm it.
    pub fn charge_accepted(&mut self, now: DateTime<Utc>) {
        if let Some(charge) = &mut self.state.charge {
            charge.accepted = true;
            charge.until = now + ACCEPTED_WAIT;
        }
        self.schedule(now);
    }

    /// The provider could not answer: the same charge later.
    pub fn charge_unavailable(&mut self, now: DateTime<Utc>) {
        if let Some(charge) = &mut self.state.charge {
            charge.until = now + UNAVAILABLE_RETRY;
        }
        self.schedule(now);
    }

    /// The charge was declined (or never confirmed): the next attempt after
    /// the dunning delay, or the end. Returns when the next attempt is, or
    /// `None` when the subscription expired.
    pub fn charge_failed(&mut self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.state.charge = None;
        let sub = &mut self.subscription;
        sub.failed_attempts += 1;
        if sub.failed_attempts >= MAX_CHARGE_ATTEMPTS {
            self.expire();
            return None;
        }
        let delay = DUNNING_DELAYS_DAYS[(sub.failed_attempts as usize - 1).min(DUNNING_DELAYS_DAYS.len() - 1)];
        let next = now + Duration::days(delay);
        sub.status = SubscriptionStatus::PastDue;
        sub.next_action_at = Some(next);
        Some(next)
    }

    /// Turns auto-renewal on or off. The next action moves with it: a
    /// Stars subscription that will not renew ends at its period end, one
    /// that will waits the grace for Telegram's payment.
    pub fn set_auto_renew(&mut self, on: bool, now: DateTime<Utc>) {
        self.subscription.auto_renew = on;
        if self.state.charge.is_none() && self.subscription.status == SubscriptionStatus::Active {
            self.schedule(now);
        }
    }

    pub fn remind(&mut self, sent: u32, now: DateTime<Utc>) {
        self.state.reminders_sent = sent;
        self.schedule(now);
    }

    pub fn expire(&mut self) {
        self.state.charge = None;
        self.subscription.status = SubscriptionStatus::Expired;
        self.subscription.next_action_at = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extending_adds_to_the_end() {
        let now = Utc::now();
        let mut sub = Subscription {
            user: UserId::new(1).unwrap(),
            tariff_id: TariffId::new("sub").unwrap(),
            status: SubscriptionStatus::Active,
            period: 1,
            period_start: now - Duration::days(10),
            period_end: now + Duration::days(20),
            period_days: 30,
            tokens_per_period: Tokens::new(1000).unwrap(),
            auto_renew: true,
            renewal: None,
            failed_attempts: 0,
            next_action_at: None,
        };
        sub.extend(now);
        assert_eq!(sub.period, 2);
        assert_eq!(sub.period_end, now + Duration::days(50));
        sub.status = SubscriptionStatus::Expired;
        sub.period_end = now - Duration::days(5);
        sub.extend(now);
        assert_eq!(sub.period_start, now, "a lapsed subscription restarts today");
        assert_eq!(sub.status, SubscriptionStatus::Active);
    }

    fn record(now: DateTime<Utc>, method: Option<RenewalMethod>) -> SubscriptionRecord {
        let mut record = SubscriptionRecord {
            subscription: Subscription {
                user: UserId::new(1).unwrap(),
                tariff_id: TariffId::new("sub").unwrap(),
                status: SubscriptionStatus::Active,
                period: 1,
                period_start: now,
                period_end: now + Duration::days(30),
                period_days: 30,
                tokens_per_period: Tokens::new(1000).unwrap(),
                auto_renew: method.is_some(),
                renewal: method,
                failed_attempts: 0,
                next_action_at: None,
            },
            state: RenewalState::default(),
        };
        record.schedule(now);
        record
    }

    fn card() -> Option<RenewalMethod> {
        Some(RenewalMethod::Mock {
            recurring_token: "t".into(),
        })
    }

    #[test]
    fn reminders_are_due_before_the_end_and_sent_only_when_nothing_renews() {
        let now = Utc::now();
        let end = now + Duration::days(30);
        let mut r = record(now, card());
        assert_eq!(r.subscription.next_action_at, Some(end - Duration::days(3)));
        assert_eq!(r.step(now, true), Step::Wait);
        let at = end - Duration::days(3);
        assert_eq!(
            r.step(at, true),
            Step::Remind {
                days: 3,
                notify: false,
                sent: 1
            }
        );
        assert_eq!(
            r.step(at, false),
            Step::Remind {
                days: 3,
                notify: true,
                sent: 1
            },
            "a method this deployment cannot charge does not renew"
        );
        // A sweep that missed the 3-day reminder sends only the 1-day one.
        assert_eq!(
            r.step(end - Duration::hours(12), true),
            Step::Remind {
                days: 1,
                notify: false,
                sent: 2
            }
        );
        r.remind(2, end - Duration::hours(12));
        assert_eq!(r.subscription.next_action_at, Some(end));
        assert_eq!(
            r.step(end, true),
            Step::Charge {
                attempt: 1,
                again: None
            }
        );
        r.subscription.auto_renew = false;
        assert_eq!(r.step(end, true), Step::Expire(ExpiryReason::Cancelled));
        r.subscription.auto_renew = true;
        assert_eq!(r.step(end, false), Step::Expire(ExpiryReason::NoPaymentMethod));
    }

    #[test]
    fn dunning_retries_after_one_and_three_days_then_expires() {
        let now = Utc::now();
        let end = now + Duration::days(30);
        let mut r = record(now, card());
        let invoice = InvoiceId::new("ren-1-2-1").unwrap();
        r.start_charge(invoice.clone(), 1, end);
        assert_eq!(r.step(end, true), Step::Wait, "in flight");
        assert_eq!(
            r.step(end + CHARGE_LEASE, true),
            Step::Charge {
                attempt: 1,
                again: Some(invoice.clone())
            },
            "its sweep died: the same invoice again"
        );
        r.charge_accepted(end);
        assert_eq!(r.step(end + ACCEPTED_WAIT, true), Step::Unconfirmed { invoice });
        assert_eq!(r.charge_failed(end), Some(end + Duration::days(1)));
        assert_eq!(r.subscription.status, SubscriptionStatus::PastDue);
        assert_eq!(r.step(end + Duration::hours(23), true), Step::Wait);
        assert_eq!(
            r.step(end + Duration::days(1), true),
            Step::Charge {
                attempt: 2,
                again: None
            }
        );
        let second = end + Duration::days(1);
        assert_eq!(r.charge_failed(second), Some(second + Duration::days(3)));
        assert_eq!(r.charge_failed(second + Duration::days(3)), None);
        assert_eq!(
            (r.subscription.status, r.subscription.next_action_at),
            (SubscriptionStatus::Expired, None)
        );
        assert_eq!(r.step(second + Duration::days(10), true), Step::Wait);
    }

    #[test]
    fn cancelling_a_stars_subscription_ends_it_at_the_period_end() {
        let now = Utc::now();
        let stars = Some(RenewalMethod::TelegramStars {
            charge_id: "charge".into(),
            expires_at: Some(now + Duration::days(30)),
        });
        let mut r = record(now, stars);
        let end = r.subscription.period_end;
        let after_reminders = end - Duration::hours(12);
        r.remind(REMINDER_DAYS.len() as u32, after_reminders);
        assert_eq!(r.subscription.next_action_at, Some(end + STARS_GRACE));

        r.set_auto_renew(false, after_reminders);
        assert_eq!(r.subscription.next_action_at, Some(end));
        assert_eq!(r.step(end, false), Step::Expire(ExpiryReason::Cancelled));

        r.set_auto_renew(true, after_reminders);
        assert_eq!(r.subscription.next_action_at, Some(end + STARS_GRACE));
        assert_eq!(r.step(end, false), Step::Wait);
    }

    #[test]
    fn stars_subscriptions_wait_for_telegram_until_the_grace_ends() {
        let now = Utc::now();
        let end = now + Duration::days(30);
        let stars = Some(RenewalMethod::TelegramStars {
            charge_id: "c".into(),
            expires_at: Some(end),
        });
        let mut r = record(now, stars);
        r.remind(2, end - Duration::days(1));
        assert_eq!(r.subscription.next_action_at, Some(end + STARS_GRACE));
        assert_eq!(r.step(end, false), Step::Wait);
        assert_eq!(
            r.step(end + STARS_GRACE, false),
            Step::Expire(ExpiryReason::StarsNotRenewed)
        );
    }
}
