//! What a purchase costs: the discount math, written once.
//!
//! Order of application:
//! 1. the price comes from the catalog for the chosen currency;
//! 2. the promo discount is computed on that price (percent: rounded to the
//!    currency's minor unit, half away from zero — kopecks for RUB, whole
//!    stars for XTR; fixed: at most the price);
//! 3. amount due = price − discount, never below zero;
//! 4. a due amount above zero but below the currency's minimum payable
//!    amount (1.00 RUB, 1 star) is raised to that minimum: providers refuse
//!    smaller charges, and a near-total discount must not become free by
//!    accident. Only a discount that covers the whole price makes a
//!    purchase free (no provider involved).
//!
//! Extra tokens from a promo are computed on the tariff's tokens, rounded
//! down to whole tokens.

use rust_decimal::Decimal;

use super::promo::{PromoCode, PromoEffect};
use super::tariff::Tariff;
use super::{Currency, DomainError, Money, Tokens};

/// The smallest charge a provider accepts in `currency`.
pub fn minimum_payable(currency: Currency) -> Money {
    let amount = match currency {
        Currency::Rub => Decimal::ONE,
        Currency::Xtr => Decimal::ONE,
    };
    Money::new(amount, currency).expect("minimum payable amounts are valid")
}

/// Everything a confirmation screen and an invoice need to know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quote {
    pub price: Money,
    pub discount: Money,
    pub amount_due: Money,
    pub tokens: Tokens,
    pub bonus_tokens: Tokens,
}

impl Quote {
    pub fn is_free(&self) -> bool {
        self.amount_due.is_zero()
    }

    pub fn total_tokens(&self) -> Result<Tokens, DomainError> {
        self.tokens.checked_add(self.bonus_tokens)
    }
}

/// Prices `tariff` in `currency`, with `promo` if one applies.
pub fn quote(tariff: &Tariff, currency: Currency, promo: Option<&PromoCode>) -> Result<Quote, DomainError> {
    let price = tariff
        .price(currency)
        .ok_or_else(|| DomainError::invalid("currency", format!("{} is not sold for {currency}", tariff.id)))?;
    let discount = match promo {
        Some(promo) => promo.discount_on(&price)?,
        None => Money::zero(currency),
    };
    let mut amount_due = price.saturating_sub(&discount)?;
    if !amount_due.is_zero() {
        amount_due = amount_due.max(minimum_payable(currency))?;
    }
    // What the user actually saves after the minimum is applied.
    let discount = price.saturating_sub(&amount_due)?;
    let bonus_tokens = match promo.map(|p| &p.effect) {
        Some(PromoEffect::ExtraTokens { percent }) => tariff.tokens.percent(*percent)?,
        Some(PromoEffect::BonusTokens { tokens }) => *tokens,
        _ => Tokens::ZERO,
    };
    Ok(Quote {
        price,
        discount,
        amount_due,
        tokens: tariff.tokens,
        bonus_tokens,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use rust_decimal_macros::dec;

    use super::*;
    use crate::domain::TariffId;
    use crate::domain::promo::PromoCodeText;
    use crate::domain::tariff::{Localized, TariffKind};

    fn tariff(rub: Decimal, xtr: Decimal, tokens: u64) -> Tariff {
        Tariff {
            id: TariffId::new("t").unwrap(),
            kind: TariffKind::TokenPack,
            title: Localized {
                ru: "т".into(),
                en: "t".into(),
            },
            description: Localized {
                ru: String::new(),
                en: String::new(),
            },
            tokens: Tokens::new(tokens).unwrap(),
            prices: BTreeMap::from([(Currency::Rub, rub), (Currency::Xtr, xtr)]),
            active: true,
            sort_order: 0,
        }
    }

    fn promo(effect: PromoEffect) -> PromoCode {
        PromoCode::new(PromoCodeText::new("CODE").unwrap(), effect)
    }

    fn rub(amount: Decimal) -> Money {
        Money::new(amount, Currency::Rub).unwrap()
    }

    /// (rub price, xtr price, tokens, effect, currency, price, discount, due, bonus tokens)
    type Case = (
        Decimal,
        Decimal,
        u64,
        Option<PromoEffect>,
        Currency,
        Decimal,
        Decimal,
        Decimal,
        u64,
    );

    #[test]
    fn discount_table() {
        use PromoEffect::*;
        // (rub price, xtr price, tokens, effect, currency, price, discount, due, bonus)
        let cases: Vec<Case> = vec![
            (
                dec!(99),
                dec!(50),
                100,
                None,
                Currency::Rub,
                dec!(99),
                dec!(0),
                dec!(99),
                0,
            ),
            (
                dec!(99),
                dec!(50),
                100,
                None,
                Currency::Xtr,
                dec!(50),
                dec!(0),
                dec!(50),
                0,
            ),
            // 15% of 199.99 = 29.9985 -> 30.00 (half away from zero, kopecks)
            (
                dec!(199.99),
                dec!(100),
                100,
                Some(PercentDiscount { percent: dec!(15) }),
                Currency::Rub,
                dec!(199.99),
                dec!(30.00),
                dec!(169.99),
                0,
            ),
            // 33% of 0.05 RUB... not a catalog price; 33% of 10.05 = 3.3165 -> 3.32
            (
                dec!(10.05),
                dec!(1),
                1,
                Some(PercentDiscount { percent: dec!(33) }),
                Currency::Rub,
                dec!(10.05),
                dec!(3.32),
                dec!(6.73),
                0,
            ),
            // Stars round to whole stars: 10% of 55 = 5.5 -> 6
            (
                dec!(99),
                dec!(55),
                100,
                Some(PercentDiscount { percent: dec!(10) }),
                Currency::Xtr,
                dec!(55),
                dec!(6),
                dec!(49),
                0,
            ),
            // 100% makes it free
            (
                dec!(99),
                dec!(50),
                100,
                Some(PercentDiscount { percent: dec!(100) }),
                Currency::Rub,
                dec!(99),
                dec!(99),
                dec!(0),
                0,
            ),
            // 99.5% leaves 0.495 -> discount 98.51 -> due 0.49 < 1.00: raised to the minimum
            (
                dec!(99),
                dec!(50),
                100,
                Some(PercentDiscount { percent: dec!(99.5) }),
                Currency::Rub,
                dec!(99),
                dec!(98),
                dec!(1),
                0,
            ),
            // 99% of 50 stars = 49.5 -> 50: free
            (
                dec!(99),
                dec!(50),
                100,
                Some(PercentDiscount { percent: dec!(99) }),
                Currency::Xtr,
                dec!(50),
                dec!(50),
                dec!(0),
                0,
            ),
            // fixed discount below, equal to, and above the price
            (
                dec!(99),
                dec!(50),
                100,
                Some(FixedDiscount {
                    amount: rub(dec!(20.5)),
                }),
                Currency::Rub,
                dec!(99),
                dec!(20.5),
                dec!(78.5),
                0,
            ),
            (
                dec!(99),
                dec!(50),
                100,
                Some(FixedDiscount { amount: rub(dec!(99)) }),
                Currency::Rub,
                dec!(99),
                dec!(99),
                dec!(0),
                0,
            ),
            (
                dec!(99),
                dec!(50),
                100,
                Some(FixedDiscount { amount: rub(dec!(500)) }),
                Currency::Rub,
                dec!(99),
                dec!(99),
                dec!(0),
                0,
            ),
            // fixed 98.50 leaves 0.50: raised to 1.00
            (
                dec!(99),
                dec!(50),
                100,
                Some(FixedDiscount {
                    amount: rub(dec!(98.5)),
                }),
                Currency::Rub,
                dec!(99),
                dec!(98),
                dec!(1),
                0,
            ),
            // a rouble discount does nothing to a stars price
            (
                dec!(99),
                dec!(50),
                100,
                Some(FixedDiscount { amount: rub(dec!(20)) }),
                Currency::Xtr,
                dec!(50),
                dec!(0),
                dec!(50),
                0,
            ),
            // token effects leave the price alone; extra tokens round down
            (
                dec!(99),
                dec!(50),
                999,
                Some(ExtraTokens { percent: 10 }),
                Currency::Rub,
                dec!(99),
                dec!(0),
                dec!(99),
                99,
            ),
            (
                dec!(99),
                dec!(50),
                100,
                Some(BonusTokens {
                    tokens: Tokens::new(25).unwrap(),
                }),
                Currency::Xtr,
                dec!(50),
                dec!(0),
                dec!(50),
                25,
            ),
        ];
        for (i, (rub_price, xtr_price, tokens, effect, currency, price, discount, due, bonus)) in
            cases.into_iter().enumerate()
        {
            let tariff = tariff(rub_price, xtr_price, tokens);
            let promo = effect.map(promo);
            let quote = quote(&tariff, currency, promo.as_ref()).unwrap_or_else(|e| panic!("case {i}: {e}"));
            assert_eq!(quote.price.amount(), price, "case {i}: price");
            assert_eq!(quote.discount.amount(), discount, "case {i}: discount");
            assert_eq!(quote.amount_due.amount(), due, "case {i}: due");
            assert_eq!(quote.bonus_tokens.get(), bonus, "case {i}: bonus tokens");
            assert_eq!(
                quote.price.amount(),
                quote.discount.amount() + quote.amount_due.amount(),
                "case {i}: price = discount + due"
            );
        }
    }

    #[test]
    fn a_currency_the_tariff_lacks_is_refused() {
        let mut tariff = tariff(dec!(99), dec!(50), 100);
        tariff.prices.remove(&Currency::Xtr);
        assert!(quote(&tariff, Currency::Xtr, None).is_err());
    }
}
