//! Subscriptions as data. Renewal flows live in the renewal sweep.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use super::{TariffId, Tokens, UserId};

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
    /// shortens what was already paid for.
    pub fn extend(&mut self, now: DateTime<Utc>) {
        let start = if self.period_end > now { self.period_end } else { now };
        self.period += 1;
        self.period_start = start;
        self.period_end = Self::period_end_from(start, self.period_days);
        self.status = SubscriptionStatus::Active;
        self.failed_attempts = 0;
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
}
