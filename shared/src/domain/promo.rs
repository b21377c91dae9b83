//! Promo codes as data. Redemption (atomic limits) lives in the store.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::{DomainError, Money, TariffId, Tokens};

/// A code as users type it: case-insensitive, stored upper-case.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PromoCodeText(String);

impl PromoCodeText {
    pub fn new(text: &str) -> Result<Self, DomainError> {
        let code = text.trim().to_ascii_uppercase();
        let valid = (3..=32).contains(&code.len())
            && code
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !valid {
            return Err(DomainError::invalid("promo code", "3..=32 letters, digits, '_' or '-'"));
        }
        Ok(Self(code))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for PromoCodeText {
    type Error = DomainError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(&value)
    }
}

impl From<PromoCodeText> for String {
    fn from(code: PromoCodeText) -> Self {
        code.0
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum PromoEffect {
    /// Percent off the price.
    PercentDiscount { percent: Decimal },
    /// A fixed amount off the price (never below zero).
    FixedDiscount { amount: Money },
    /// Tokens granted once, when the code is activated.
    BonusTokens { tokens: Tokens },
    /// Percent more tokens on a purchase.
    ExtraTokens { percent: u32 },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromoCode {
    pub code: PromoCodeText,
    pub effect: PromoEffect,
    pub valid_from: Option<DateTime<Utc>>,
    pub valid_until: Option<DateTime<Utc>>,
    /// Total redemptions allowed; `None` is unlimited. (Absent rather than
    /// null when stored, so a condition can test `attribute_not_exists`.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_redemptions: Option<u64>,
    /// Redemptions taken: reserved by pending invoices, or used.
    #[serde(default)]
    pub redemptions: u64,
    /// Redemptions consumed by paid invoices or activations.
    #[serde(default)]
    pub paid_redemptions: u64,
    pub per_user_limit: u32,
    pub first_purchase_only: bool,
    /// Empty means every tariff.
    pub allowed_tariffs: Vec<TariffId>,
    pub min_amount: Option<Money>,
    pub active: bool,
}

/// Why a code cannot be used. Each has its own words for the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "snake_case")]
pub enum PromoRejection {
    #[error("there is no such promo code")]
    NotFound,
    #[error("this promo code has been switched off")]
    Inactive,
    #[error("this promo code is not valid yet")]
    NotYetValid,
    #[error("this promo code has expired")]
    Expired,
    #[error("this promo code has been used up")]
    Exhausted,
    #[error("you have already used this promo code")]
    AlreadyUsed,
    #[error("this promo code is only for a first purchase")]
    FirstPurchaseOnly,
    #[error("this promo code does not apply to this tariff")]
    TariffNotAllowed,
    #[error("the purchase is below this promo code's minimum amount")]
    BelowMinimum,
}

impl PromoRejection {
    /// A stable machine-readable code.
    pub fn code(self) -> &'static str {
        match self {
            PromoRejection::NotFound => "not_found",
            PromoRejection::Inactive => "inactive",
            PromoRejection::NotYetValid => "not_yet_valid",
            PromoRejection::Expired => "expired",
            PromoRejection::Exhausted => "exhausted",
            PromoRejection::AlreadyUsed => "already_used",
            PromoRejection::FirstPurchaseOnly => "first_purchase_only",
            PromoRejection::TariffNotAllowed => "tariff_not_allowed",
            PromoRejection::BelowMinimum => "below_minimum",
        }
    }
}

impl PromoCode {
    /// A code with the defaults operators expect: active, no window, no
    /// total limit, once per user, every tariff, no minimum.
    pub fn new(code: PromoCodeText, effect: PromoEffect) -> Self {
        Self {
            code,
            effect,
            valid_from: None,
            valid_until: None,
            max_redemptions: None,
            redemptions: 0,
            paid_redemptions: 0,
            per_user_limit: 1,
            first_purchase_only: false,
            allowed_tariffs: Vec::new(),
            min_amount: None,
            active: true,
        }
    }

    /// The checks that need no counters (those are enforced atomically by
    /// the store).
    pub fn check_static(
        &self,
        now: DateTime<Utc>,
        tariff: Option<&TariffId>,
        amount: Option<&Money>,
    ) -> Result<(), PromoRejection> {
        if !self.active {
            return Err(PromoRejection::Inactive);
        }
        if self.valid_from.is_some_and(|from| now < from) {
            return Err(PromoRejection::NotYetValid);
        }
        if self.valid_until.is_some_and(|until| now >= until) {
            return Err(PromoRejection::Expired);
        }
        if let Some(tariff) = tariff
            && !self.allowed_tariffs.is_empty()
            && !self.allowed_tariffs.contains(tariff)
        {
            return Err(PromoRejection::TariffNotAllowed);
        }
        if let (Some(min), Some(amount)) = (&self.min_amount, amount)
            && min.currency() == amount.currency()
            && amount.amount() < min.amount()
        {
            return Err(PromoRejection::BelowMinimum);
        }
        if self.max_redemptions.is_some_and(|max| self.redemptions >= max) {
            return Err(PromoRejection::Exhausted);
        }
        Ok(())
    }

    /// The discount this code gives on `price` (zero for token effects).
    pub fn discount_on(&self, price: &Money) -> Result<Money, DomainError> {
        match &self.effect {
            PromoEffect::PercentDiscount { percent } => price.percent(*percent),
            PromoEffect::FixedDiscount { amount } if amount.currency() == price.currency() => amount.min(*price),
            _ => Ok(Money::zero(price.currency())),
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::Duration;
    use rust_decimal_macros::dec;

    use super::*;
    use crate::domain::Currency;

    fn code(effect: PromoEffect) -> PromoCode {
        let mut promo = PromoCode::new(PromoCodeText::new("welcome").unwrap(), effect);
        promo.max_redemptions = Some(10);
        promo
    }

    #[test]
    fn codes_are_normalized() {
        assert_eq!(PromoCodeText::new(" welcome-10 ").unwrap().as_str(), "WELCOME-10");
        assert!(PromoCodeText::new("ab").is_err());
        assert!(PromoCodeText::new("bad code").is_err());
    }

    #[test]
    fn discounts_never_exceed_the_price() {
        let price = Money::parse("199.99", Currency::Rub).unwrap();
        let pct = code(PromoEffect::PercentDiscount { percent: dec!(15) });
        assert_eq!(
            pct.discount_on(&price).unwrap(),
            Money::parse("30.00", Currency::Rub).unwrap()
        );
        let fixed = code(PromoEffect::FixedDiscount {
            amount: Money::parse("500", Currency::Rub).unwrap(),
        });
        assert_eq!(fixed.discount_on(&price).unwrap(), price);
        let stars = Money::parse("50", Currency::Xtr).unwrap();
        assert!(
            fixed.discount_on(&stars).unwrap().is_zero(),
            "a rouble discount does not apply to stars"
        );
    }

    #[test]
    fn static_checks_say_why() {
        let now = Utc::now();
        let mut promo = code(PromoEffect::ExtraTokens { percent: 10 });
        assert_eq!(promo.check_static(now, None, None), Ok(()));
        promo.valid_until = Some(now - Duration::seconds(1));
        assert_eq!(promo.check_static(now, None, None), Err(PromoRejection::Expired));
        promo.valid_until = None;
        promo.valid_from = Some(now + Duration::hours(1));
        assert_eq!(promo.check_static(now, None, None), Err(PromoRejection::NotYetValid));
        promo.valid_from = None;
        promo.allowed_tariffs = vec![TariffId::new("sub_month").unwrap()];
        assert_eq!(
            promo.check_static(now, Some(&TariffId::new("pack").unwrap()), None),
            Err(PromoRejection::TariffNotAllowed)
        );
        promo.allowed_tariffs.clear();
        promo.redemptions = 10;
        assert_eq!(promo.check_static(now, None, None), Err(PromoRejection::Exhausted));
    }
}
