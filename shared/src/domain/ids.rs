//! Identifiers. Each parses strictly, so anything that reaches a DynamoDB
//! key has already been checked.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::DomainError;

/// A Telegram user id. Telegram guarantees at most 52 significant bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UserId(i64);

impl UserId {
    const MAX: i64 = (1 << 52) - 1;

    pub fn new(id: i64) -> Result<Self, DomainError> {
        if !(1..=Self::MAX).contains(&id) {
            return Err(DomainError::invalid(
                "user id",
                format!("{id} is not a Telegram user id"),
            ));
        }
        Ok(Self(id))
    }

    pub fn get(self) -> i64 {
        self.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for UserId {
    type Err = DomainError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let id = s
            .parse()
            .map_err(|_| DomainError::invalid("user id", format!("{s:?} is not a number")))?;
        Self::new(id)
    }
}

/// One ledger entry: the user and a time-ordered unique id (UUIDv7).
/// Shown to callers as `"<user>.<32 hex digits>"`, so a transaction id
/// alone locates its entry without an index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TxId {
    pub user: UserId,
    pub id: uuid::Uuid,
}

impl TxId {
    /// A new id for `user`, ordered after earlier ones (to the millisecond).
    pub fn generate(user: UserId) -> Self {
        Self {
            user,
            id: uuid::Uuid::now_v7(),
        }
    }

    /// The entry's sortable part, as used in keys.
    pub fn sortable(&self) -> String {
        self.id.simple().to_string()
    }
}

impl fmt::Display for TxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.user, self.id.simple())
    }
}

impl FromStr for TxId {
    type Err = DomainError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || DomainError::invalid("transaction id", format!("{s:?} is not <user>.<32 hex digits>"));
        let (user, id) = s.split_once('.').ok_or_else(bad)?;
        let lower_hex = id.len() == 32 && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !lower_hex {
            return Err(bad());
        }
        let id = uuid::Uuid::parse_str(id).map_err(|_| bad())?;
        Ok(TxId {
            user: user.parse().map_err(|_| bad())?,
            id,
        })
    }
}

impl Serialize for TxId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for TxId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A hold is identified by the ledger entry that created it.
pub type HoldId = TxId;

/// The caller's promise that two requests are the same request.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub const MAX_LEN: usize = 200;

    pub fn new(key: impl Into<String>) -> Result<Self, DomainError> {
        let key = key.into();
        if key.is_empty() || key.len() > Self::MAX_LEN {
            return Err(DomainError::invalid(
                "idempotency key",
                format!("must be 1..={} bytes", Self::MAX_LEN),
            ));
        }
        if !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(DomainError::invalid(
                "idempotency key",
                "only visible ASCII characters are allowed",
            ));
        }
        Ok(Self(key))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for IdempotencyKey {
    type Error = DomainError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<IdempotencyKey> for String {
    fn from(key: IdempotencyKey) -> Self {
        key.0
    }
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Defines a string identifier restricted to `[A-Za-z0-9_-]`, safe inside
/// keys, callback data and URLs.
macro_rules! slug_id {
    ($name:ident, $what:literal, $max:literal) => {
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub fn new(id: impl Into<String>) -> Result<Self, DomainError> {
                let id = id.into();
                let valid = !id.is_empty()
                    && id.len() <= $max
                    && id
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
                if !valid {
                    return Err(DomainError::invalid(
                        $what,
                        format!("{id:?} must be 1..={} of A-Z a-z 0-9 _ -", $max),
                    ));
                }
                Ok(Self(id))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = DomainError;
            fn try_from(value: String) -> Result<Self, Self::Error> {
                Self::new(value)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> Self {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl FromStr for $name {
            type Err = DomainError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::new(s)
            }
        }
    };
}

slug_id!(TariffId, "tariff id", 40);
slug_id!(InvoiceId, "invoice id", 64);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_ids_are_positive_telegram_ids() {
        assert!(UserId::new(0).is_err());
        assert!(UserId::new(-5).is_err());
        assert!(UserId::new(1 << 52).is_err());
        assert_eq!("42".parse::<UserId>().unwrap().get(), 42);
        assert!("4x".parse::<UserId>().is_err());
    }

    #[test]
    fn tx_ids_round_trip_and_reject_junk() {
        let tx = TxId::generate(UserId::new(42).unwrap());
        assert_eq!(tx.to_string().parse::<TxId>().unwrap(), tx);
        let later = TxId::generate(UserId::new(42).unwrap());
        assert!(tx.sortable() <= later.sortable(), "ids sort by creation time");
        let hex = tx.id.simple().to_string();
        for junk in [
            "42".to_owned(),
            format!("42.{}", &hex[..31]),
            format!("x.{hex}"),
            format!("42.{}", hex.to_uppercase()),
            format!("0.{hex}"),
            format!("42.{hex}.1"),
            format!(".{hex}"),
        ] {
            assert!(junk.parse::<TxId>().is_err(), "{junk} should be rejected");
        }
    }

    #[test]
    fn keys_and_slugs_are_restricted() {
        assert!(IdempotencyKey::new("").is_err());
        assert!(IdempotencyKey::new("a b").is_err());
        assert!(IdempotencyKey::new("x".repeat(201)).is_err());
        assert!(IdempotencyKey::new("invoice:abc-1").is_ok());
        assert!(TariffId::new("pack_100").is_ok());
        assert!(TariffId::new("pack 100").is_err());
        assert!(TariffId::new("пакет").is_err());
    }
}
