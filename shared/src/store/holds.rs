//! Holds that outlive their time give their tokens back: when anything
//! touches them (a capture, a balance read, a spend that came up short)
//! and, for the ones nobody touches, in the periodic sweep.

use super::item::{parse, s};
use super::keys;
use super::{BalanceRequest, Store, StoreError};
use crate::domain::ledger::{Hold, HoldStatus};
use crate::domain::{DomainError, IdempotencyKey, TxId, UserId};

impl Store {
    /// Releases `hold` because it expired. Safe to run any number of times,
    /// from any number of places: the release has one idempotency key per
    /// hold, and a hold captured or released meanwhile is left alone.
    /// `true` when this call gave the tokens back.
    pub async fn release_expired_hold(&self, hold: TxId) -> Result<bool, StoreError> {
        let key = IdempotencyKey::new(format!("hold-expired:{}", hold.sortable()))?;
        let request = BalanceRequest::release(hold, key).description("hold expired");
        match self.apply(request).await {
            Ok(applied) => Ok(!applied.replayed),
            Err(StoreError::Domain(DomainError::HoldNotActive { .. })) => Ok(false),
            Err(err) => Err(err),
        }
    }

    /// Gives back every expired hold of `user`; how many there were.
    pub async fn release_expired_holds_of(&self, user: UserId) -> Result<usize, StoreError> {
        let now = self.now();
        let query = self
            .prefix_query(keys::user_pk(user), keys::HOLD_PREFIX)
            .consistent_read(true)
            .filter_expression("#status = :active")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":active", s(HoldStatus::Active.as_str()));
        let mut released = 0;
        for item in self.query_all(query).await? {
            let hold: Hold = parse("hold", item)?;
            if hold.is_expired(now) && self.release_expired_hold(hold.hold_id).await? {
                released += 1;
            }
        }
        Ok(released)
    }

    /// Up to `limit` active holds whose time ran out, from the sparse `due`
    /// index (its shards read in turn).
    pub async fn expired_holds(&self, limit: i32) -> Result<Vec<TxId>, StoreError> {
        let now = self.now();
        let mut found = Vec::new();
        for shard in 0..keys::HOLD_EXPIRY_SHARDS {
            let left = limit - found.len() as i32;
            if left <= 0 {
                break;
            }
            let holds: Vec<Hold> = self
                .due_items(&keys::hold_expiry_partition(shard), now, left, "hold")
                .await?;
            found.extend(holds.into_iter().map(|hold| hold.hold_id));
        }
        Ok(found)
    }
}
