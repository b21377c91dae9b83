//! Token amounts: whole, non-negative numbers. Every arithmetic step is
//! checked, so a bug can never wrap a balance around.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::DomainError;

/// Largest amount accepted anywhere: keeps every sum of two amounts, and
/// every signed delta, inside `i64` (DynamoDB numbers and JSON consumers).
pub const MAX_TOKENS: u64 = 1_000_000_000_000_000;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Tokens(u64);

impl Tokens {
    pub const ZERO: Tokens = Tokens(0);

    /// Any amount within bounds, zero included (balances).
    pub fn new(value: u64) -> Result<Self, DomainError> {
        if value > MAX_TOKENS {
            return Err(DomainError::TokenOverflow);
        }
        Ok(Self(value))
    }

    /// An amount to move: at least one token.
    pub fn positive(value: u64) -> Result<Self, DomainError> {
        match Self::new(value)? {
            Tokens(0) => Err(DomainError::ZeroTokens),
            tokens => Ok(tokens),
        }
    }

    pub fn get(self) -> u64 {
        self.0
    }

    pub fn as_i64(self) -> i64 {
        // MAX_TOKENS < i64::MAX, so this never truncates.
        self.0 as i64
    }

    pub fn checked_add(self, other: Tokens) -> Result<Tokens, DomainError> {
        self.0
            .checked_add(other.0)
            .ok_or(DomainError::TokenOverflow)
            .and_then(Tokens::new)
    }

    pub fn checked_sub(self, other: Tokens) -> Option<Tokens> {
        self.0.checked_sub(other.0).map(Tokens)
    }

    /// Applies a signed delta; `None` if the result would be negative.
    pub fn apply(self, delta: i64) -> Result<Option<Tokens>, DomainError> {
        let next = i128::from(self.0) + i128::from(delta);
        if next < 0 {
            return Ok(None);
        }
        u64::try_from(next)
            .map_err(|_| DomainError::TokenOverflow)
            .and_then(Tokens::new)
            .map(Some)
    }

    /// `percent`% of this amount, rounded down: bonuses never invent a
    /// fraction of a token.
    pub fn percent(self, percent: u32) -> Result<Tokens, DomainError> {
        let value = u128::from(self.0) * u128::from(percent) / 100;
        u64::try_from(value)
            .map_err(|_| DomainError::TokenOverflow)
            .and_then(Tokens::new)
    }
}

impl fmt::Display for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_enforced() {
        assert_eq!(Tokens::positive(0), Err(DomainError::ZeroTokens));
        assert_eq!(Tokens::new(MAX_TOKENS + 1), Err(DomainError::TokenOverflow));
        assert_eq!(Tokens::new(MAX_TOKENS).unwrap().get(), MAX_TOKENS);
        let max = Tokens::new(MAX_TOKENS).unwrap();
        assert_eq!(
            max.checked_add(Tokens::positive(1).unwrap()),
            Err(DomainError::TokenOverflow)
        );
    }

    #[test]
    fn signed_deltas_never_go_negative() {
        let ten = Tokens::new(10).unwrap();
        assert_eq!(ten.apply(-10).unwrap(), Some(Tokens::ZERO));
        assert_eq!(ten.apply(-11).unwrap(), None);
        assert_eq!(ten.apply(5).unwrap(), Some(Tokens::new(15).unwrap()));
        assert_eq!(ten.checked_sub(Tokens::new(11).unwrap()), None);
    }

    #[test]
    fn percent_rounds_down() {
        assert_eq!(Tokens::new(999).unwrap().percent(10).unwrap().get(), 99);
        assert_eq!(Tokens::new(1000).unwrap().percent(15).unwrap().get(), 150);
        assert_eq!(Tokens::new(1).unwrap().percent(50).unwrap().get(), 0);
    }
}
