//! Service keys (stored by hash) and the rate windows that limit them.

use aws_sdk_dynamodb::types::{ConditionCheck, TransactWriteItem, Update};
use chrono::{DateTime, Utc};

use super::item::{n, record, s};
use super::keys::{self, Key};
use super::{Store, StoreError};
use crate::domain::UserId;
use crate::domain::service_key::{KeyHash, KeyId, RateWindow, ServiceKey};

/// Rate windows are kept a while after they close, then left to TTL.
const WINDOW_TTL_SECONDS: i64 = 120;

/// A rate window a request counts into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateSlot {
    key: Key,
    limit: u32,
    expires: i64,
}

impl RateSlot {
    /// The user's window for `now`: `limit` spends a second.
    pub fn user(user: UserId, limit: u32, now: DateTime<Utc>) -> Self {
        let start = now.timestamp();
        Self {
            key: keys::user_rate_window(user, start),
            limit,
            expires: start + WINDOW_TTL_SECONDS,
        }
    }

    /// One shard, chosen at random, of the key's window for `now`.
    pub fn key(id: &KeyId, window: RateWindow) -> Self {
        use rand::Rng;
        let shard = rand::rng().random_range(0..window.shards);
        Self {
            key: keys::key_rate_window(id, shard, window.start),
            limit: window.per_shard,
            expires: window.start + WINDOW_TTL_SECONDS,
        }
    }

    fn update(&self, store: &Store) -> Result<Update, StoreError> {
        Update::builder()
            .table_name(store.table())
            .set_key(Some(self.key.to_item()))
            .update_expression("SET #ttl = :ttl, #entity = :entity ADD #count :one")
            .condition_expression("attribute_not_exists(#count) OR #count < :limit")
            .expression_attribute_names("#count", "count")
            .expression_attribute_names("#ttl", keys::TTL)
            .expression_attribute_names("#entity", keys::ENTITY)
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":limit", n(self.limit))
            .expression_attribute_values(":ttl", n(self.expires))
            .expression_attribute_values(":entity", s("rate_window"))
            .build()
            .map_err(|e| StoreError::corrupt("rate window", e))
    }
}

impl Store {
    /// Stores a new key's record (its hash, never the key).
    pub async fn create_service_key(&self, key: &ServiceKey) -> Result<(), StoreError> {
        let mut item = record(&keys::service_key(&key.hash), "service_key", key)?;
        item.insert(keys::GSI1_PK.to_owned(), s(keys::SERVICE_KEY_LIST));
        item.insert(keys::GSI1_SK.to_owned(), s(key.id.as_str()));
        self.client
            .put_item()
            .table_name(self.table())
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", keys::PK)
            .send()
            .await
            .map_err(|e| StoreError::from_sdk("PutItem", e))?;
        Ok(())
    }

    /// The key whose hash is `hash`, revoked or not.
    pub async fn service_key(&self, hash: &KeyHash) -> Result<Option<ServiceKey>, StoreError> {
        self.get_record(&keys::service_key(hash), "service key", false).await
    }

    /// Every key, ordered by id.
    pub async fn service_keys(&self) -> Result<Vec<ServiceKey>, StoreError> {
        self.gsi1_list(keys::SERVICE_KEY_LIST, "service key").await
    }

    /// Marks key `id` revoked; the spend API refuses it once its cached
    /// lookups lapse.
    pub async fn revoke_service_key(&self, id: &KeyId) -> Result<ServiceKey, StoreError> {
        let key = self
            .service_keys()
            .await?
            .into_iter()
            .find(|key| &key.id == id)
            .ok_or_else(|| StoreError::NotFound {
                what: format!("service key {id}"),
            })?;
        let now = self.now();
        self.client
            .update_item()
            .table_name(self.table())
            .set_key(Some(keys::service_key(&key.hash).to_item()))
            .update_expression("SET #revoked = if_not_exists(#revoked, :now)")
            .expression_attribute_names("#revoked", "revoked_at")
            .expression_attribute_values(":now", s(now.to_rfc3339()))
            .send()
            .await
            .map_err(|e| StoreError::from_sdk("UpdateItem", e))?;
        Ok(ServiceKey {
            revoked_at: key.revoked_at.or(Some(now)),
            ..key
        })
    }

    /// Counts one request into `slot`, as an item of a larger transaction:
    /// its condition fails when the window is full.
    pub fn rate_slot_item(&self, slot: &RateSlot) -> Result<TransactWriteItem, StoreError> {
        Ok(TransactWriteItem::builder().update(slot.update(self)?).build())
    }

    /// Counts one request into `slot` on its own (reads, which write
    /// nothing else). `false` when the window is full.
    pub async fn take_rate_slot(&self, slot: &RateSlot) -> Result<bool, StoreError> {
        let update = slot.update(self)?;
        let result = self
            .client
            .update_item()
            .table_name(self.table())
            .set_key(Some(update.key))
            .update_expression(update.update_expression)
            .set_condition_expression(update.condition_expression)
            .set_expression_attribute_names(update.expression_attribute_names)
            .set_expression_attribute_values(update.expression_attribute_values)
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Ok(false)
            }
            Err(err) => Err(StoreError::from_sdk("UpdateItem", err)),
        }
    }

    /// A transaction item that holds only while the user is registered.
    pub fn user_exists_item(&self, user: UserId) -> Result<TransactWriteItem, StoreError> {
        let check = ConditionCheck::builder()
            .table_name(self.table())
            .set_key(Some(keys::profile(user).to_item()))
            .condition_expression("attribute_exists(#pk)")
            .expression_attribute_names("#pk", keys::PK)
            .build()
            .map_err(|e| StoreError::corrupt("user check", e))?;
        Ok(TransactWriteItem::builder().condition_check(check).build())
    }
}
