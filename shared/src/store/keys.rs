//! Every item's keys, in one place. Nothing else in the code base spells
//! out a `pk`/`sk` value.
//!
//! | item                 | pk               | sk                    |
//! |----------------------|------------------|-----------------------|
//! | user profile         | `USER#<id>`      | `PROFILE`             |
//! | account (balance)    | `USER#<id>`      | `ACCOUNT`             |
//! | ledger entry         | `USER#<id>`      | `TX#<uuidv7 hex>`     |
//! | idempotency record   | `USER#<id>`      | `IDEM#<key>`          |
//! | hold                 | `USER#<id>`      | `HOLD#<uuidv7 hex>`   |
//! | tariff               | `CATALOG`        | `TARIFF#<id>`         |
//! | invoice              | `INVOICE#<id>`   | `INVOICE`             |
//! | promo code           | `PROMO#<CODE>`   | `PROMO`               |
//! | promo use by a user  | `PROMO#<CODE>`   | `USER#<id>`           |
//! | counter              | `COUNTER#<name>` | `COUNTER`             |
//! | subscription         | `USER#<id>`      | `SUBSCRIPTION`        |
//! | code for next purchase | `USER#<id>`    | `PENDING_PROMO`       |
//! | Telegram update seen | `TGUPDATE#<id>`  | `UPDATE`              |
//! | stats: all time      | `STATS#TOTAL`    | `TOTAL`               |
//! | stats: one day       | `STATS#<date>`   | `DAY`                 |
//! | stats: a day's shard | `STATS#<date>#<nn>` | `SHARD`            |
//! | notification (outbox)| `NOTIFY#<id>`    | `NOTIFICATION`        |
//! | service key          | `SERVICEKEY#<sha256>` | `SERVICE_KEY`    |
//! | user's rate window   | `USER#<id>`      | `RATE#<epoch s>`      |
//! | key's rate window    | `RATE#<key id>#<shard>` | `W#<epoch s>`  |
//!
//! Secondary keys: invoices carry `gsi1pk = USER#<id>`, `gsi1sk =
//! INVOICE#<created>` (a user's invoices) and, while pending,
//! `due_pk = INVOICE_EXPIRY`, `due_at = <expiry epoch s>`; promo codes carry
//! `gsi1pk = PROMOS`, `gsi1sk = <CODE>` (the list of codes); notifications
//! carry, until delivered, `due_pk = OUTBOX`, `due_at = <epoch s>` (when to
//! publish them again if no notifier has delivered them by then); active holds
//! carry `due_pk = HOLD_EXPIRY#<shard>`, `due_at = <expiry epoch s>` (the
//! sweep gives expired ones back); subscriptions carry, while something is
//! due, `due_pk = SUBSCRIPTION_DUE#<user mod 8>`, `due_at = <next action
//! epoch s>` (the renewal sweep); service keys carry `gsi1pk =
//! SERVICE_KEYS`, `gsi1sk = <key id>` (listing, revoking by id).

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;

use crate::domain::ids::HoldId;
use crate::domain::{IdempotencyKey, TariffId, TxId, UserId};

pub const PK: &str = "pk";
pub const SK: &str = "sk";
/// Names the kind of every item, for audits and ad-hoc queries.
pub const ENTITY: &str = "entity";
/// Epoch seconds after which DynamoDB may delete an item. Code never
/// relies on the deletion: expiry is always checked when an item is read.
pub const TTL: &str = "ttl";

/// Generic inverted index: user-owned items that are looked up another way.
pub const GSI1: &str = "gsi1";
pub const GSI1_PK: &str = "gsi1pk";
pub const GSI1_SK: &str = "gsi1sk";

/// Sparse index of work that falls due at a time (subscriptions): only
/// items with a due time appear in it, so a sweep reads only what is due.
pub const DUE_INDEX: &str = "due";
pub const DUE_PK: &str = "due_pk";
pub const DUE_AT: &str = "due_at";

pub const LEDGER_PREFIX: &str = "TX#";

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    pub pk: String,
    pub sk: String,
}

impl Key {
    fn new(pk: impl Into<String>, sk: impl Into<String>) -> Self {
        Self {
            pk: pk.into(),
            sk: sk.into(),
        }
    }

    pub fn to_item(&self) -> HashMap<String, AttributeValue> {
        HashMap::from([
            (PK.to_owned(), AttributeValue::S(self.pk.clone())),
            (SK.to_owned(), AttributeValue::S(self.sk.clone())),
        ])
    }

    /// Reads the key back from an item returned by DynamoDB.
    pub fn of(item: &HashMap<String, AttributeValue>) -> Option<Key> {
        match (item.get(PK), item.get(SK)) {
            (Some(AttributeValue::S(pk)), Some(AttributeValue::S(sk))) => Some(Key::new(pk.clone(), sk.clone())),
            _ => None,
        }
    }
}

pub fn user_pk(user: UserId) -> String {
    format!("USER#{user}")
}

pub fn profile(user: UserId) -> Key {
    Key::new(user_pk(user), "PROFILE")
}

pub fn account(user: UserId) -> Key {
    Key::new(user_pk(user), "ACCOUNT")
}

/// Ids are UUIDv7, so entries sort by creation time, oldest first.
pub fn ledger_entry(tx: TxId) -> Key {
    Key::new(user_pk(tx.user), format!("{LEDGER_PREFIX}{}", tx.sortable()))
}

pub fn idempotency(user: UserId, key: &IdempotencyKey) -> Key {
    Key::new(user_pk(user), format!("IDEM#{key}"))
}

pub fn hold(hold: HoldId) -> Key {
    Key::new(user_pk(hold.user), format!("{HOLD_PREFIX}{}", hold.sortable()))
}

pub const CATALOG_PK: &str = "CATALOG";
pub const TARIFF_PREFIX: &str = "TARIFF#";

pub fn tariff(id: &TariffId) -> Key {
    Key::new(CATALOG_PK, format!("{TARIFF_PREFIX}{id}"))
}

pub fn invoice(id: &crate::domain::InvoiceId) -> Key {
    Key::new(format!("INVOICE#{id}"), "INVOICE")
}

/// The `due` index partition of pending invoices, keyed by expiry.
pub const INVOICE_EXPIRY_DUE: &str = "INVOICE_EXPIRY";
/// The `gsi1` partition listing every promo code.
pub const PROMO_LIST: &str = "PROMOS";

pub fn promo(code: &crate::domain::promo::PromoCodeText) -> Key {
    Key::new(format!("PROMO#{}", code.as_str()), "PROMO")
}

/// How often one user has used (or reserved) a promo code.
pub fn promo_use(code: &crate::domain::promo::PromoCodeText, user: UserId) -> Key {
    Key::new(format!("PROMO#{}", code.as_str()), user_pk(user))
}

pub fn counter(name: &str) -> Key {
    Key::new(format!("COUNTER#{name}"), "COUNTER")
}

pub fn telegram_update(update_id: u32) -> Key {
    Key::new(format!("TGUPDATE#{update_id}"), "UPDATE")
}

/// The promo code a user entered for their next purchase.
pub fn pending_promo(user: UserId) -> Key {
    Key::new(user_pk(user), "PENDING_PROMO")
}

pub fn subscription(user: UserId) -> Key {
    Key::new(user_pk(user), "SUBSCRIPTION")
}

/// Subscriptions spread over this many `due` partitions (by user id), so
/// the renewal index never makes one hot partition.
pub const SUBSCRIPTION_DUE_SHARDS: u32 = 8;

/// The `due` partition of one shard of subscriptions with something due.
pub fn subscription_due_partition(shard: u32) -> String {
    format!("SUBSCRIPTION_DUE#{shard}")
}

pub fn subscription_due(user: UserId) -> String {
    subscription_due_partition((user.get().unsigned_abs() % u64::from(SUBSCRIPTION_DUE_SHARDS)) as u32)
}

/// The `due` index partition of notifications not yet delivered.
pub const OUTBOX_DUE: &str = "OUTBOX";

pub fn notification(id: &crate::domain::notification::NotificationId) -> Key {
    Key::new(format!("NOTIFY#{id}"), "NOTIFICATION")
}

/// Looked up by the hash of the key a caller presents.
pub fn service_key(hash: &crate::domain::service_key::KeyHash) -> Key {
    Key::new(format!("SERVICEKEY#{}", hash.as_str()), "SERVICE_KEY")
}

/// The `gsi1` partition listing every service key by id.
pub const SERVICE_KEY_LIST: &str = "SERVICE_KEYS";

/// A user's spend count in one window: beside the account, written in the
/// spend's own transaction.
pub fn user_rate_window(user: UserId, window_start: i64) -> Key {
    Key::new(user_pk(user), format!("RATE#{window_start}"))
}

/// One shard of a key's count in one window (each shard its own partition).
pub fn key_rate_window(key: &crate::domain::service_key::KeyId, shard: u32, window_start: i64) -> Key {
    Key::new(format!("RATE#{key}#{shard}"), format!("W#{window_start}"))
}

/// Active holds spread over this many `due` partitions, so a busy spend API
/// never makes one hot index partition.
pub const HOLD_EXPIRY_SHARDS: u32 = 8;

/// The `due` partition of one shard of active holds.
pub fn hold_expiry_partition(shard: u32) -> String {
    format!("HOLD_EXPIRY#{shard}")
}

pub fn hold_expiry_due(hold: HoldId) -> String {
    // The random bits of the UUIDv7 are the low ones.
    hold_expiry_partition((hold.id.as_u128() % u128::from(HOLD_EXPIRY_SHARDS)) as u32)
}

pub const HOLD_PREFIX: &str = "HOLD#";

pub fn stats_total() -> Key {
    Key::new("STATS#TOTAL", "TOTAL")
}

pub fn stats_day(day: chrono::NaiveDate) -> Key {
    Key::new(format!("STATS#{day}"), "DAY")
}

/// Shards are separate partitions: every balance change counts into one,
/// and a shared partition key would cap all of them at one partition's
/// write rate.
pub fn stats_shard(day: chrono::NaiveDate, shard: i64) -> Key {
    Key::new(format!("STATS#{day}#{shard:02}"), "SHARD")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ledger_keys_sort_by_creation() {
        let user = UserId::new(5).unwrap();
        let a = ledger_entry(TxId::generate(user));
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = ledger_entry(TxId::generate(user));
        assert!(a.sk < b.sk);
        assert_eq!(a.pk, "USER#5");
        assert_eq!(Key::of(&a.to_item()), Some(a));
    }
}
