//! Service keys: how an external service (an LLM gateway, say) proves who
//! it is to the spend API, what it may do, and how fast.
//!
//! A key reads `tbk_<id>_<secret>`: the id (12 hex digits) names the key in
//! listings and logs; the secret (64 hex digits, 256 random bits) is shown
//! once when the key is created. Only the SHA-256 of the whole key is
//! stored. A slow password hash would add nothing: the key is random, not
//! chosen by a person, so no dictionary can guess it.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::DomainError;

const PREFIX: &str = "tbk_";
const ID_HEX: usize = 12;
const SECRET_HEX: usize = 64;

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Spend, hold, capture, release and refund tokens.
    Spend,
    /// Read balances and transactions.
    Read,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Spend => "spend",
            Scope::Read => "read",
        }
    }

    /// `spend,read` -> both scopes; unknown names are refused.
    pub fn parse_list(text: &str) -> Result<Vec<Scope>, DomainError> {
        let mut scopes: Vec<Scope> = text
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::parse)
            .collect::<Result<_, _>>()?;
        scopes.sort();
        scopes.dedup();
        if scopes.is_empty() {
            return Err(DomainError::invalid("scopes", "name at least one of spend, read"));
        }
        Ok(scopes)
    }
}

impl FromStr for Scope {
    type Err = DomainError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "spend" => Ok(Scope::Spend),
            "read" => Ok(Scope::Read),
            other => Err(DomainError::invalid(
                "scope",
                format!("{other:?} is not one of spend, read"),
            )),
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Requests per second, enforced in one-second windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RatePerSecond(u32);

impl RatePerSecond {
    /// What [`RateWindow`] can spread without any shard item passing its
    /// capacity (64 shards of 125/s); far past what API Gateway's stage
    /// throttling lets through anyway.
    pub const MAX: u32 = RateWindow::MAX_SHARDS * RateWindow::SHARD_CAPACITY;

    pub fn new(per_second: u32) -> Result<Self, DomainError> {
        if !(1..=Self::MAX).contains(&per_second) {
            return Err(DomainError::invalid(
                "rate",
                format!("{per_second}/s must be within 1..={}/s", Self::MAX),
            ));
        }
        Ok(Self(per_second))
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

impl FromStr for RatePerSecond {
    type Err = DomainError;
    /// `100/s`, or a bare `100`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let number = s.trim().strip_suffix("/s").unwrap_or(s.trim());
        let per_second = number
            .parse()
            .map_err(|_| DomainError::invalid("rate", format!("{s:?} is not N/s")))?;
        Self::new(per_second)
    }
}

impl fmt::Display for RatePerSecond {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/s", self.0)
    }
}

/// A key's public id: 12 lowercase hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct KeyId(String);

impl KeyId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for KeyId {
    type Error = DomainError;
    fn try_from(id: String) -> Result<Self, Self::Error> {
        if id.len() == ID_HEX && is_lower_hex(&id) {
            Ok(Self(id))
        } else {
            Err(DomainError::invalid(
                "key id",
                format!("{id:?} is not {ID_HEX} hex digits"),
            ))
        }
    }
}

impl FromStr for KeyId {
    type Err = DomainError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::try_from(s.to_owned())
    }
}

impl From<KeyId> for String {
    fn from(id: KeyId) -> Self {
        id.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn is_lower_hex(text: &str) -> bool {
    text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A presented key, checked for shape only. Its `Debug` hides the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretKey {
    id: KeyId,
    text: String,
}

impl SecretKey {
    /// A new random key.
    pub fn generate() -> Self {
        use rand::RngCore;
        let mut bytes = [0u8; ID_HEX / 2 + SECRET_HEX / 2];
        rand::rng().fill_bytes(&mut bytes);
        let hex = hex::encode(bytes);
        let (id, secret) = hex.split_at(ID_HEX);
        Self {
            id: KeyId(id.to_owned()),
            text: format!("{PREFIX}{id}_{secret}"),
        }
    }

    /// Parses what a caller sent; `None` for anything not shaped like a key
    /// (so no lookup is spent on it).
    pub fn parse(text: &str) -> Option<Self> {
        let rest = text.strip_prefix(PREFIX)?;
        let (id, secret) = rest.split_once('_')?;
        let valid = id.len() == ID_HEX && secret.len() == SECRET_HEX && is_lower_hex(id) && is_lower_hex(secret);
        valid.then(|| Self {
            id: KeyId(id.to_owned()),
            text: text.to_owned(),
        })
    }

    pub fn id(&self) -> &KeyId {
        &self.id
    }

    /// The whole key, to show once to the operator who created it.
    pub fn reveal(&self) -> &str {
        &self.text
    }

    /// What is stored and looked up: hex SHA-256 of the whole key.
    pub fn hash(&self) -> KeyHash {
        KeyHash(hex::encode(Sha256::digest(self.text.as_bytes())))
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey({PREFIX}{}_…)", self.id)
    }
}

/// The stored form of a key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct KeyHash(String);

impl KeyHash {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A service key as stored (never the key itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceKey {
    pub id: KeyId,
    pub hash: KeyHash,
    pub name: String,
    pub scopes: Vec<Scope>,
    pub rate: RatePerSecond,
    pub created_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<DateTime<Utc>>,
}

impl ServiceKey {
    /// A new key and its record; the secret is returned once, here.
    pub fn create(
        name: &str,
        scopes: Vec<Scope>,
        rate: RatePerSecond,
        now: DateTime<Utc>,
    ) -> Result<(SecretKey, ServiceKey), DomainError> {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
            return Err(DomainError::invalid("key name", "1..=64 printable characters"));
        }
        if scopes.is_empty() {
            return Err(DomainError::invalid("scopes", "name at least one of spend, read"));
        }
        let secret = SecretKey::generate();
        let key = ServiceKey {
            id: secret.id().clone(),
            hash: secret.hash(),
            name: name.to_owned(),
            scopes,
            rate,
            created_at: now,
            revoked_at: None,
        };
        Ok((secret, key))
    }

    pub fn allows(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }

    pub fn is_active(&self) -> bool {
        self.revoked_at.is_none()
    }
}

/// Fixed one-second windows, counted in DynamoDB so every Lambda instance
/// sees the same count.
///
/// A key's window is split over shards (separate partition keys, picked at
/// random per request) so a busy key never makes one hot item: a
/// transactional write costs two write units, and one partition takes
/// about 1000 write units a second, so each shard is kept to
/// [`RateWindow::SHARD_CAPACITY`] requests a second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateWindow {
    /// Start of the window, in epoch seconds.
    pub start: i64,
    /// Shards the limit is divided over.
    pub shards: u32,
    /// Requests each shard takes in the window.
    pub per_shard: u32,
}

impl RateWindow {
    /// Requests per second one shard item is given: a quarter of one
    /// partition's transactional write capacity, leaving room for the
    /// partition's other traffic.
    pub const SHARD_CAPACITY: u32 = 125;
    pub const MAX_SHARDS: u32 = 64;

    pub fn for_rate(rate: RatePerSecond, now: DateTime<Utc>) -> Self {
        let shards = rate.get().div_ceil(Self::SHARD_CAPACITY).clamp(1, Self::MAX_SHARDS);
        Self {
            start: now.timestamp(),
            shards,
            per_shard: rate.get().div_ceil(shards),
        }
    }

    /// Seconds until the next window opens (the `Retry-After` answer).
    pub fn retry_after(&self, now: DateTime<Utc>) -> u64 {
        u64::try_from(self.start + 1 - now.timestamp()).unwrap_or(0).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_only_their_hash_is_stored() {
        let (secret, record) = ServiceKey::create(
            "gateway",
            vec![Scope::Spend],
            RatePerSecond::new(10).unwrap(),
            Utc::now(),
        )
        .unwrap();
        let parsed = SecretKey::parse(secret.reveal()).unwrap();
        assert_eq!(parsed.hash(), record.hash);
        assert_eq!(parsed.id(), &record.id);
        assert_eq!(record.hash.as_str().len(), 64);
        assert!(!format!("{record:?}").contains(&secret.reveal()[16..]));
        assert!(
            !format!("{secret:?}").contains(&secret.reveal()[16..]),
            "Debug hides the secret"
        );
        let other = SecretKey::generate();
        assert_ne!(other.hash(), record.hash);
    }

    #[test]
    fn malformed_keys_are_refused_without_a_lookup() {
        let good = SecretKey::generate().reveal().to_owned();
        for bad in [
            "",
            "tbk_",
            "Bearer x",
            &good[..good.len() - 1],
            &good.to_uppercase(),
            &good.replace("tbk_", "tbx_"),
            &format!("{good}0"),
        ] {
            assert!(SecretKey::parse(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn scopes_and_rates_parse_strictly() {
        assert_eq!(
            Scope::parse_list("read, spend,read").unwrap(),
            vec![Scope::Spend, Scope::Read]
        );
        assert!(Scope::parse_list("").is_err());
        assert!(Scope::parse_list("spend,admin").is_err());
        assert_eq!("50/s".parse::<RatePerSecond>().unwrap().get(), 50);
        assert_eq!("7".parse::<RatePerSecond>().unwrap().get(), 7);
        for bad in ["0/s", "-1/s", "1.5/s", "8001/s", "ten/s", "5/m"] {
            assert!(bad.parse::<RatePerSecond>().is_err(), "{bad}");
        }
    }

    #[test]
    fn busy_keys_are_spread_over_shards_that_each_stay_under_capacity() {
        let now = DateTime::from_timestamp(1_800_000_000, 250_000_000).unwrap();
        let cases = [
            (1, 1, 1),
            (125, 1, 125),
            (126, 2, 63),
            (1000, 8, 125),
            (5000, 40, 125),
            (8_000, 64, 125),
        ];
        for (rate, shards, per_shard) in cases {
            let window = RateWindow::for_rate(RatePerSecond::new(rate).unwrap(), now);
            assert_eq!((window.shards, window.per_shard), (shards, per_shard), "{rate}/s");
            assert!(
                window.shards * window.per_shard >= rate,
                "never below the configured rate"
            );
            assert_eq!(window.start, 1_800_000_000);
            assert_eq!(window.retry_after(now), 1);
        }
    }
}
