//! The catalog: what users can buy. Prices come only from here.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::user::Language;
use super::{Currency, DomainError, Money, TariffId, Tokens};

/// Default length of a subscription period.
pub const DEFAULT_PERIOD_DAYS: u32 = 30;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TariffKind {
    TokenPack,
    Subscription {
        #[serde(default = "default_period")]
        period_days: u32,
    },
}

fn default_period() -> u32 {
    DEFAULT_PERIOD_DAYS
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Localized {
    pub ru: String,
    pub en: String,
}

impl Localized {
    pub fn get(&self, language: Language) -> &str {
        match language {
            Language::Ru => &self.ru,
            Language::En => &self.en,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tariff {
    pub id: TariffId,
    pub kind: TariffKind,
    pub title: Localized,
    pub description: Localized,
    pub tokens: Tokens,
    /// Amount per currency; a currency absent here cannot be used to buy.
    pub prices: BTreeMap<Currency, Decimal>,
    pub active: bool,
    pub sort_order: i32,
}

impl Tariff {
    /// Checks what the catalog file or an operator supplied.
    pub fn validate(&self) -> Result<(), DomainError> {
        if self.tokens == Tokens::ZERO {
            return Err(DomainError::invalid("tariff", format!("{} grants no tokens", self.id)));
        }
        if self.prices.is_empty() {
            return Err(DomainError::invalid("tariff", format!("{} has no price", self.id)));
        }
        for (currency, amount) in &self.prices {
            let price = Money::new(*amount, *currency)?;
            if price.is_zero() {
                return Err(DomainError::invalid(
                    "tariff",
                    format!("{} has a zero {currency} price", self.id),
                ));
            }
        }
        if let TariffKind::Subscription { period_days } = self.kind
            && !(1..=366).contains(&period_days)
        {
            return Err(DomainError::invalid(
                "tariff",
                format!("{} has a period of {period_days} days", self.id),
            ));
        }
        for text in [&self.title.ru, &self.title.en] {
            if text.trim().is_empty() || text.chars().count() > 64 {
                return Err(DomainError::invalid(
                    "tariff",
                    format!("{} needs titles of 1..=64 characters", self.id),
                ));
            }
        }
        Ok(())
    }

    pub fn price(&self, currency: Currency) -> Option<Money> {
        self.prices
            .get(&currency)
            .and_then(|amount| Money::new(*amount, currency).ok())
    }

    pub fn is_subscription(&self) -> bool {
        matches!(self.kind, TariffKind::Subscription { .. })
    }
}

#[cfg(test)]
mod tests {
    use rust_decimal_macros::dec;

    use super::*;

    fn tariff() -> Tariff {
        Tariff {
            id: TariffId::new("pack_100").unwrap(),
            kind: TariffKind::TokenPack,
            title: Localized {
                ru: "100 токенов".into(),
                en: "100 tokens".into(),
            },
            description: Localized {
                ru: "".into(),
                en: "".into(),
            },
            tokens: Tokens::new(100).unwrap(),
            prices: BTreeMap::from([(Currency::Rub, dec!(99)), (Currency::Xtr, dec!(50))]),
            active: true,
            sort_order: 1,
        }
    }

    #[test]
    fn valid_tariffs_pass_and_bad_ones_say_why() {
        assert!(tariff().validate().is_ok());
        assert_eq!(tariff().price(Currency::Rub).unwrap().to_minor(), 9_900);
        let mut fractional_stars = tariff();
        fractional_stars.prices.insert(Currency::Xtr, dec!(1.5));
        assert!(fractional_stars.validate().is_err());
        let mut free = tariff();
        free.prices.insert(Currency::Rub, dec!(0));
        assert!(free.validate().is_err());
        let mut empty = tariff();
        empty.tokens = Tokens::ZERO;
        assert!(empty.validate().is_err());
        let mut long = tariff();
        long.kind = TariffKind::Subscription { period_days: 0 };
        assert!(long.validate().is_err());
    }

    #[test]
    fn subscriptions_default_to_thirty_days() {
        let kind: TariffKind = serde_json::from_str(r#"{"type":"subscription"}"#).unwrap();
        assert_eq!(kind, TariffKind::Subscription { period_days: 30 });
    }
}
