//! Reading the ledger: history pages and audits.

use aws_sdk_dynamodb::types::AttributeValue;

use super::balance::AccountRecord;
use super::item::{Item, parse, s};
use super::keys::{self, Key};
use super::{Store, StoreError};
use crate::domain::ledger::{self, AuditReport, LedgerEntry};
use crate::domain::{Balance, TxId, UserId};

/// A page of entries, newest first; `next` continues after the last one.
#[derive(Debug, Clone)]
pub struct LedgerPage {
    pub entries: Vec<LedgerEntry>,
    pub next: Option<TxId>,
}

impl Store {
    /// The account's balance and sequence (zero for a user with no entries).
    pub async fn balance(&self, user: UserId) -> Result<(Balance, u64), StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(self.table())
            .set_key(Some(keys::account(user).to_item()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| StoreError::from_sdk("GetItem", e))?;
        let Some(item) = output.item else {
            return Ok((Balance::default(), 0));
        };
        let account: AccountRecord = parse("account", item)?;
        Ok((
            Balance {
                available: account.available,
                held: account.held,
            },
            account.seq,
        ))
    }

    /// Up to `limit` entries, newest first, starting after `after`.
    pub async fn ledger_page(
        &self,
        user: UserId,
        after: Option<TxId>,
        limit: i32,
    ) -> Result<LedgerPage, StoreError> {
        let limit = limit.clamp(1, 100);
        let mut query = self
            .client
            .query()
            .table_name(self.table())
            .key_condition_expression("#pk = :pk AND begins_with(#sk, :prefix)")
            .expression_attribute_names("#pk", keys::PK)
            .expression_attribute_names("#sk", keys::SK)
            .expression_attribute_values(":pk", s(keys::user_pk(user)))
            .expression_attribute_values(":prefix", s(keys::LEDGER_PREFIX))
            .scan_index_forward(false)
            .limit(limit);
        if let Some(after) = after.filter(|tx| tx.user == user) {
            query = query.set_exclusive_start_key(Some(keys::ledger_entry(after).to_item()));
        }
        let output = query
            .send()
            .await
            .map_err(|e| StoreError::from_sdk("Query", e))?;
        let entries = parse_entries(output.items.unwrap_or_default())?;
        let next = match output.last_evaluated_key {
            Some(_) => entries.last().map(|entry| entry.tx_id),
            None => None,
        };
        Ok(LedgerPage { entries, next })
    }

    /// Every entry up to `up_to_seq`, oldest first (consistent reads).
    pub async fn ledger_entries(
        &self,
        user: UserId,
        up_to_seq: u64,
    ) -> Result<Vec<LedgerEntry>, StoreError> {
        let mut entries = Vec::new();
        let mut start: Option<Item> = None;
        let upper = keys::ledger_entry(TxId {
            user,
            seq: up_to_seq.max(1),
        });
        loop {
            let output = self
                .client
                .query()
                .table_name(self.table())
                .key_condition_expression("#pk = :pk AND #sk BETWEEN :first AND :last")
                .expression_attribute_names("#pk", keys::PK)
                .expression_attribute_names("#sk", keys::SK)
                .expression_attribute_values(":pk", s(keys::user_pk(user)))
                .expression_attribute_values(":first", s(keys::LEDGER_PREFIX))
                .expression_attribute_values(":last", AttributeValue::S(upper.sk.clone()))
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| StoreError::from_sdk("Query", e))?;
            entries.extend(parse_entries(output.items.unwrap_or_default())?);
            match output.last_evaluated_key {
                Some(key) => start = Some(key),
                None => break,
            }
        }
        if up_to_seq == 0 {
            entries.clear();
        }
        Ok(entries)
    }

    /// Recomputes the user's balance from the ledger and compares it with
    /// the account. Entries written after the account was read are left
    /// out, so an audit is exact even while the user is spending.
    pub async fn audit(&self, user: UserId) -> Result<AuditReport, StoreError> {
        let (balance, seq) = self.balance(user).await?;
        let entries = self.ledger_entries(user, seq).await?;
        Ok(ledger::audit(balance, seq, &entries))
    }
}

fn parse_entries(items: Vec<Item>) -> Result<Vec<LedgerEntry>, StoreError> {
    items
        .into_iter()
        .map(|item| {
            let key = Key::of(&item).map(|k| k.sk).unwrap_or_default();
            parse::<LedgerEntry>("ledger entry", item)
                .map_err(|e| StoreError::corrupt(format!("ledger entry {key}"), e))
        })
        .collect()
}
