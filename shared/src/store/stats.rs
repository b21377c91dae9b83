//! Counters for operators: users, paid invoices, tokens by kind per day.
//!
//! Token counters are sharded by user over 16 items per day, each under its
//! own partition key, and written in the same transaction as each balance
//! change, so busy spending never turns one stats partition into a hot key.

use std::collections::BTreeMap;

use aws_sdk_dynamodb::types::{TransactWriteItem, Update};
use chrono::NaiveDate;

use super::item::{n, s};
use super::keys::{self, Key};
use super::{Store, StoreError};
use crate::domain::{EntryKind, Tokens, UserId};

pub const STAT_SHARDS: i64 = 16;

/// One day's figures.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DailyStats {
    pub users_total: u64,
    pub paid_invoices: u64,
    /// Tokens moved per ledger entry kind that day.
    pub tokens: BTreeMap<String, i64>,
}

impl DailyStats {
    pub fn tokens_of(&self, kind: EntryKind) -> i64 {
        self.tokens.get(kind.as_str()).copied().unwrap_or(0)
    }
}

fn add(store: &Store, key: Key, attribute: &str, amount: i64) -> Result<TransactWriteItem, StoreError> {
    let update = Update::builder()
        .table_name(store.table())
        .set_key(Some(key.to_item()))
        .update_expression("SET #entity = :entity ADD #counter :amount")
        .expression_attribute_names("#entity", keys::ENTITY)
        .expression_attribute_names("#counter", attribute)
        .expression_attribute_values(":entity", s("stats"))
        .expression_attribute_values(":amount", n(amount))
        .build()
        .map_err(|e| StoreError::corrupt("stats update", e))?;
    Ok(TransactWriteItem::builder().update(update).build())
}

impl Store {
    pub(crate) fn count_tokens(
        &self,
        user: UserId,
        kind: EntryKind,
        amount: Tokens,
    ) -> Result<TransactWriteItem, StoreError> {
        let day = self.now().date_naive();
        add(
            self,
            keys::stats_shard(day, user.get().rem_euclid(STAT_SHARDS)),
            &format!("tokens_{kind}"),
            amount.as_i64(),
        )
    }

    pub(crate) fn count_paid_invoice_today(&self) -> Result<TransactWriteItem, StoreError> {
        add(self, keys::stats_day(self.now().date_naive()), "paid_invoices", 1)
    }

    /// Counts a new user, as one item of a larger transaction.
    pub fn count_new_user_item(&self) -> Result<TransactWriteItem, StoreError> {
        add(self, keys::stats_total(), "users", 1)
    }

    pub(crate) async fn count_new_user(&self) -> Result<(), StoreError> {
        self.client
            .update_item()
            .table_name(self.table())
            .set_key(Some(keys::stats_total().to_item()))
            .update_expression("SET #entity = :entity ADD #users :one")
            .expression_attribute_names("#entity", keys::ENTITY)
            .expression_attribute_names("#users", "users")
            .expression_attribute_values(":entity", s("stats"))
            .expression_attribute_values(":one", n(1))
            .send()
            .await
            .map_err(|e| StoreError::from_sdk("UpdateItem", e))?;
        Ok(())
    }

    /// The figures of `day` (one batch read).
    pub async fn daily_stats(&self, day: NaiveDate) -> Result<DailyStats, StoreError> {
        let mut wanted = vec![keys::stats_total(), keys::stats_day(day)];
        wanted.extend((0..STAT_SHARDS).map(|shard| keys::stats_shard(day, shard)));
        let mut stats = DailyStats::default();
        for item in self.batch_get(wanted).await? {
            for (name, value) in &item {
                let Ok(number) = value.as_n() else { continue };
                let number: i64 = number.parse().map_err(|_| StoreError::corrupt("stats", name))?;
                match name.as_str() {
                    "users" => stats.users_total = number.max(0) as u64,
                    "paid_invoices" => stats.paid_invoices = number.max(0) as u64,
                    other => {
                        if let Some(kind) = other.strip_prefix("tokens_") {
                            *stats.tokens.entry(kind.to_owned()).or_default() += number;
                        }
                    }
                }
            }
        }
        Ok(stats)
    }
}
