//! Reading the ledger: balances, history pages and audits.

use super::balance::AccountRecord;
use super::item::{Item, parse};
use super::keys::{self, Key};
use super::{Store, StoreError};
use crate::domain::ledger::{self, AuditReport, LedgerEntry};
use crate::domain::{Balance, TxId, UserId};

/// Attempts at an audit while the user's balance keeps changing.
const AUDIT_ATTEMPTS: usize = 5;

/// A page of entries, newest first; `next` continues after the last one.
#[derive(Debug, Clone)]
pub struct LedgerPage {
    pub entries: Vec<LedgerEntry>,
    pub next: Option<TxId>,
}

impl Store {
    /// The account's balance and entry count (zeros for a user with no entries).
    pub async fn balance(&self, user: UserId) -> Result<(Balance, u64), StoreError> {
        let account: AccountRecord = self
            .get_record(&keys::account(user), "account", true)
            .await?
            .unwrap_or_default();
        Ok((
            Balance {
                available: account.available,
                held: account.held,
            },
            account.entries,
        ))
    }

    /// Up to `limit` entries, newest first, starting after `after`.
    pub async fn ledger_page(&self, user: UserId, after: Option<TxId>, limit: i32) -> Result<LedgerPage, StoreError> {
        let mut query = self
            .prefix_query(keys::user_pk(user), keys::LEDGER_PREFIX)
            .scan_index_forward(false)
            .limit(limit.clamp(1, 100));
        if let Some(after) = after.filter(|tx| tx.user == user) {
            query = query.set_exclusive_start_key(Some(keys::ledger_entry(after).to_item()));
        }
        let output = query.send().await.map_err(|e| StoreError::from_sdk("Query", e))?;
        let entries = parse_entries(output.items.unwrap_or_default())?;
        let next = output
            .last_evaluated_key
            .and_then(|_| entries.last().map(|entry| entry.tx_id));
        Ok(LedgerPage { entries, next })
    }

    /// One entry, by its id.
    pub async fn ledger_entry(&self, tx: TxId) -> Result<Option<LedgerEntry>, StoreError> {
        self.get_record(&keys::ledger_entry(tx), "ledger entry", true).await
    }

    /// Every entry of the user, oldest first (consistent reads).
    pub async fn ledger_entries(&self, user: UserId) -> Result<Vec<LedgerEntry>, StoreError> {
        let query = self
            .prefix_query(keys::user_pk(user), keys::LEDGER_PREFIX)
            .consistent_read(true);
        parse_entries(self.query_all(query).await?)
    }

    /// Recomputes the user's balance from the ledger and compares it with
    /// the account. The account is read before and after the entries; only
    /// a read during which nothing changed is audited, so a busy account
    /// never produces a false alarm.
    pub async fn audit(&self, user: UserId) -> Result<AuditReport, StoreError> {
        for _ in 0..AUDIT_ATTEMPTS {
            let before = self.balance(user).await?;
            let entries = self.ledger_entries(user).await?;
            if self.balance(user).await? == before {
                return Ok(ledger::audit(before.0, before.1, &entries));
            }
        }
        Err(StoreError::Contention {
            what: format!("audit of user {user}"),
        })
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
