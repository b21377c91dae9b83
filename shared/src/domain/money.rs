//! Money: an exact decimal amount in a currency. Never a float.
//!
//! The one rounding rule: amounts are rounded to the currency's minor unit
//! (kopecks for RUB, whole stars for XTR) half away from zero, and only
//! where an amount is derived (a percentage), never silently on input:
//! input with more precision than the currency has is rejected.

use std::fmt;
use std::str::FromStr;

use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};

use super::DomainError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Currency {
    /// Russian rouble, two decimal places (kopecks).
    #[serde(rename = "RUB")]
    Rub,
    /// Telegram Stars: whole stars only.
    #[serde(rename = "XTR")]
    Xtr,
}

impl Currency {
    pub const ALL: [Currency; 2] = [Currency::Rub, Currency::Xtr];

    pub fn code(self) -> &'static str {
        match self {
            Currency::Rub => "RUB",
            Currency::Xtr => "XTR",
        }
    }

    /// Decimal places of the smallest unit.
    pub fn minor_units(self) -> u32 {
        match self {
            Currency::Rub => 2,
            Currency::Xtr => 0,
        }
    }

    /// The rounding rule, written once.
    pub fn round(self, amount: Decimal) -> Decimal {
        amount.round_dp_with_strategy(self.minor_units(), RoundingStrategy::MidpointAwayFromZero)
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl FromStr for Currency {
    type Err = DomainError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_uppercase().as_str() {
            "RUB" => Ok(Currency::Rub),
            "XTR" => Ok(Currency::Xtr),
            _ => Err(DomainError::UnknownCurrency(s.to_owned())),
        }
    }
}

/// A non-negative amount of money. Stored and serialized as a decimal string
/// plus currency code, so no precision is ever lost in transit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "MoneyRepr", into = "MoneyRepr")]
pub struct Money {
    amount: Decimal,
    currency: Currency,
}

#[derive(Serialize, Deserialize)]
struct MoneyRepr {
    amount: Decimal,
    currency: Currency,
}

impl TryFrom<MoneyRepr> for Money {
    type Error = DomainError;
    fn try_from(repr: MoneyRepr) -> Result<Self, Self::Error> {
        Money::new(repr.amount, repr.currency)
    }
}

impl From<Money> for MoneyRepr {
    fn from(money: Money) -> Self {
        MoneyRepr {
            amount: money.amount,
            currency: money.currency,
        }
    }
}

impl Money {
    /// Exact construction: negative amounts and amounts finer than the
    /// currency's minor unit are errors, not rounded away.
    pub fn new(amount: Decimal, currency: Currency) -> Result<Self, DomainError> {
        if amount.is_sign_negative() && !amount.is_zero() {
            return Err(invalid(amount, currency, "negative"));
        }
        let normalized = amount.normalize();
        if normalized.scale() > currency.minor_units() {
            return Err(invalid(amount, currency, "more decimal places than the currency has"));
        }
        let mut amount = normalized;
        amount.rescale(currency.minor_units());
        Ok(Self { amount, currency })
    }

    pub fn zero(currency: Currency) -> Self {
        Self::new(Decimal::ZERO, currency).expect("zero is valid in every currency")
    }

    /// Parses text such as `"199"`, `"199.5"` or a provider's `"100.000000"`.
    /// Trailing zeros beyond the minor unit are fine; significant digits are not.
    pub fn parse(text: &str, currency: Currency) -> Result<Self, DomainError> {
        let amount =
            Decimal::from_str_exact(text.trim()).map_err(|_| invalid(text, currency, "not a decimal number"))?;
        Self::new(amount, currency)
    }

    /// Builds an amount from minor units (kopecks, stars).
    pub fn from_minor(minor: i64, currency: Currency) -> Result<Self, DomainError> {
        Self::new(Decimal::new(minor, currency.minor_units()), currency)
    }

    pub fn amount(&self) -> Decimal {
        self.amount
    }

    pub fn currency(&self) -> Currency {
        self.currency
    }

    pub fn is_zero(&self) -> bool {
        self.amount.is_zero()
    }

    /// The amount in minor units (kopecks for RUB), for exact comparisons
    /// with what a provider reports.
    pub fn to_minor(&self) -> i64 {
        let mut scaled = self.amount;
        scaled.rescale(self.currency.minor_units());
        i64::try_from(scaled.mantissa()).unwrap_or(i64::MAX)
    }

    /// `percent`% of this amount, rounded by the currency's rule.
    pub fn percent(&self, percent: Decimal) -> Result<Money, DomainError> {
        if percent.is_sign_negative() || percent > Decimal::ONE_HUNDRED {
            return Err(DomainError::invalid("percent", format!("{percent} is outside 0..=100")));
        }
        let part = self.currency.round(self.amount * percent / Decimal::ONE_HUNDRED);
        Money::new(part, self.currency)
    }

    /// `self - other`, floored at zero: a discount never makes a price negative.
    pub fn saturating_sub(&self, other: &Money) -> Result<Money, DomainError> {
        self.same_currency(other)?;
        Money::new((self.amount - other.amount).max(Decimal::ZERO), self.currency)
    }

    pub fn checked_add(&self, other: &Money) -> Result<Money, DomainError> {
        self.same_currency(other)?;
        let sum = self
            .amount
            .checked_add(other.amount)
            .ok_or_else(|| invalid(self.amount, self.currency, "overflow"))?;
        Money::new(sum, self.currency)
    }

    pub fn max(self, other: Money) -> Result<Money, DomainError> {
        self.same_currency(&other)?;
        Ok(if other.amount > self.amount { other } else { self })
    }

    pub fn min(self, other: Money) -> Result<Money, DomainError> {
        self.same_currency(&other)?;
        Ok(if other.amount < self.amount { other } else { self })
    }

    fn same_currency(&self, other: &Money) -> Result<(), DomainError> {
        if self.currency != other.currency {
            return Err(DomainError::CurrencyMismatch {
                left: self.currency,
                right: other.currency,
            });
        }
        Ok(())
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.amount, self.currency)
    }
}

fn invalid(amount: impl fmt::Display, currency: Currency, reason: &'static str) -> DomainError {
    DomainError::InvalidMoney {
        amount: amount.to_string(),
        currency,
        reason,
    }
}

#[cfg(test)]
mod tests {
    use rust_decimal_macros::dec;

    use super::*;

    fn rub(text: &str) -> Money {
        Money::parse(text, Currency::Rub).unwrap()
    }

    #[test]
    fn rounding_is_half_away_from_zero_to_the_minor_unit() {
        assert_eq!(Currency::Rub.round(dec!(1.005)), dec!(1.01));
        assert_eq!(Currency::Rub.round(dec!(1.004)), dec!(1.00));
        assert_eq!(Currency::Rub.round(dec!(2.675)), dec!(2.68));
        assert_eq!(Currency::Rub.round(dec!(-1.005)), dec!(-1.01));
        assert_eq!(Currency::Xtr.round(dec!(2.5)), dec!(3));
        assert_eq!(Currency::Xtr.round(dec!(2.4999)), dec!(2));
    }

    #[test]
    fn percentages_use_the_rounding_rule() {
        // 15% of 199.99 = 29.9985 -> 30.00
        assert_eq!(rub("199.99").percent(dec!(15)).unwrap(), rub("30.00"));
        // 33% of 0.05 = 0.0165 -> 0.02
        assert_eq!(rub("0.05").percent(dec!(33)).unwrap(), rub("0.02"));
        // 10% of 5 stars = 0.5 -> 1 star
        let stars = Money::parse("5", Currency::Xtr).unwrap();
        assert_eq!(stars.percent(dec!(10)).unwrap().amount(), dec!(1));
        assert!(rub("10").percent(dec!(101)).is_err());
        assert!(rub("10").percent(dec!(-1)).is_err());
    }

    #[test]
    fn input_is_exact_never_rounded() {
        assert!(Money::parse("1.001", Currency::Rub).is_err());
        assert!(Money::parse("1.5", Currency::Xtr).is_err());
        assert!(Money::parse("-1", Currency::Rub).is_err());
        assert!(Money::parse("1e3", Currency::Rub).is_err());
        assert!(Money::parse("abc", Currency::Rub).is_err());
        // Providers send trailing zeros; they are not extra precision.
        assert_eq!(rub("100.000000"), rub("100"));
        assert_eq!(rub("100.000000").to_minor(), 10_000);
        assert_eq!(rub("0.01").to_minor(), 1);
        assert_eq!(Money::from_minor(12_345, Currency::Rub).unwrap(), rub("123.45"));
    }

    #[test]
    fn subtraction_floors_at_zero_and_checks_currency() {
        assert_eq!(rub("100").saturating_sub(&rub("30.5")).unwrap(), rub("69.50"));
        assert_eq!(
            rub("10").saturating_sub(&rub("30")).unwrap(),
            Money::zero(Currency::Rub)
        );
        let stars = Money::parse("5", Currency::Xtr).unwrap();
        assert!(matches!(
            rub("10").saturating_sub(&stars),
            Err(DomainError::CurrencyMismatch { .. })
        ));
    }

    #[test]
    fn serializes_as_exact_strings() {
        let json = serde_json::to_string(&rub("199.9")).unwrap();
        assert_eq!(json, r#"{"amount":"199.90","currency":"RUB"}"#);
        let back: Money = serde_json::from_str(&json).unwrap();
        assert_eq!(back, rub("199.90"));
        assert!(serde_json::from_str::<Money>(r#"{"amount":"1.001","currency":"RUB"}"#).is_err());
    }
}
