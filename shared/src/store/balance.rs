//! Balance operations. Each one is a single `TransactWriteItems`, and a
//! credit, debit or hold is nothing else: no read comes first.
//!
//! 0. the idempotency record, put only if absent;
//! 1. the account: `ADD` the deltas, on condition that the balance covers
//!    them (`available >= n` for debits and holds);
//! 2. the ledger entry, under a fresh time-ordered id;
//! 3. the hold or earlier entry the movement touches, if any;
//! 4. any items the caller adds (an invoice's status, a promo redemption).
//!
//! A cancelled transaction says why, item by item, and hands back the
//! current item (`ALL_OLD`): a replay is answered from the stored record,
//! an overdraft is refused with the balance that was there. Captures,
//! releases and refunds read their hold or entry (and the idempotency
//! record) first, because what they post depends on it.

use aws_sdk_dynamodb::types::{KeysAndAttributes, Put, ReturnValuesOnConditionCheckFailure, TransactWriteItem, Update};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::item::{Item, n, parse, record, s};
use super::keys::{self, Key};
use super::transact::backoff;
use super::{Store, StoreError};
use crate::domain::ledger::{self, CreditKind, DebitKind, Hold, HoldStatus, LedgerEntry, Posting, RefundTarget};
use crate::domain::{DomainError, EntryKind, IdempotencyKey, Movement, Tokens, TxId, UserId};

/// Attempts before a lost race is reported as [`StoreError::Contention`].
const MAX_ATTEMPTS: u32 = 8;
/// Writes that pin the expected balance (to answer `balance_after`) before
/// falling back to a plain conditional write, which never loses a race
/// but cannot tell the balance it left.
const PINNED_ATTEMPTS: u32 = 3;

/// One request to change a balance.
#[derive(Debug, Clone)]
pub struct BalanceRequest {
    pub user: UserId,
    pub movement: Movement,
    pub key: IdempotencyKey,
    pub reference: Option<String>,
    pub description: Option<String>,
    /// Caller's data kept with the ledger entry (JSON text).
    pub metadata: Option<String>,
    /// What the caller believes the available balance is. When given (or
    /// read anyway, as for captures), the write is pinned to it and the
    /// receipt tells the exact balance after; a wrong guess costs one more
    /// round trip, never a wrong answer.
    pub expected_available: Option<Tokens>,
    /// Whatever else makes two requests "the same request" beyond the
    /// movement (e.g. a hash of an API request's body).
    pub request_fingerprint: Option<String>,
    /// Items written in the same transaction, conditions included.
    pub extra: Vec<TransactWriteItem>,
}

impl BalanceRequest {
    pub fn new(user: UserId, movement: Movement, key: IdempotencyKey) -> Self {
        Self {
            user,
            movement,
            key,
            reference: None,
            description: None,
            metadata: None,
            expected_available: None,
            request_fingerprint: None,
            extra: Vec::new(),
        }
    }

    pub fn credit(user: UserId, kind: CreditKind, tokens: Tokens, key: IdempotencyKey) -> Self {
        Self::new(user, Movement::Credit { kind, tokens }, key)
    }

    pub fn debit(user: UserId, kind: DebitKind, tokens: Tokens, key: IdempotencyKey) -> Self {
        Self::new(user, Movement::Debit { kind, tokens }, key)
    }

    pub fn hold(user: UserId, tokens: Tokens, ttl: chrono::Duration, key: IdempotencyKey) -> Self {
        Self::new(user, Movement::Hold { tokens, ttl }, key)
    }

    pub fn capture(hold_id: TxId, tokens: Tokens, key: IdempotencyKey) -> Self {
        Self::new(hold_id.user, Movement::Capture { hold_id, tokens }, key)
    }

    pub fn release(hold_id: TxId, key: IdempotencyKey) -> Self {
        Self::new(hold_id.user, Movement::Release { hold_id }, key)
    }

    pub fn refund(original: TxId, tokens: Tokens, key: IdempotencyKey) -> Self {
        Self::new(original.user, Movement::Refund { original, tokens }, key)
    }

    pub fn reference(mut self, reference: impl Into<String>) -> Self {
        self.reference = Some(reference.into());
        self
    }

    pub fn description(mut self, description: impl Into<String>) -> Self {
        self.description = Some(description.into());
        self
    }

    pub fn metadata(mut self, metadata: impl Into<String>) -> Self {
        self.metadata = Some(metadata.into());
        self
    }

    pub fn expecting(mut self, available: Option<Tokens>) -> Self {
        self.expected_available = available;
        self
    }

    pub fn fingerprinted(mut self, fingerprint: impl Into<String>) -> Self {
        self.request_fingerprint = Some(fingerprint.into());
        self
    }

    pub fn with_item(mut self, item: TransactWriteItem) -> Self {
        self.extra.push(item);
        self
    }

    fn fingerprint(&self) -> String {
        match &self.request_fingerprint {
            Some(extra) => format!("{}#{extra}", self.movement.fingerprint()),
            None => self.movement.fingerprint(),
        }
    }

    /// The hold or entry this movement refers to, which must belong to the user.
    fn related_key(&self) -> Result<Option<(Key, String)>, StoreError> {
        let (tx, key, what) = match &self.movement {
            Movement::Capture { hold_id, .. } | Movement::Release { hold_id } => {
                (*hold_id, keys::hold(*hold_id), "hold")
            }
            Movement::Refund { original, .. } => (*original, keys::ledger_entry(*original), "transaction"),
            _ => return Ok(None),
        };
        if tx.user != self.user {
            return Err(StoreError::NotFound {
                what: format!("{what} {tx}"),
            });
        }
        Ok(Some((key, format!("{what} {tx}"))))
    }
}

/// What an applied operation did: the same value on every replay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    pub tx_id: TxId,
    pub kind: EntryKind,
    pub amount: Tokens,
    pub created_at: DateTime<Utc>,
    /// For holds: when the hold lapses on its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    /// The available balance this operation left, when the write was
    /// pinned to the balance before it (see
    /// [`BalanceRequest::expected_available`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balance_after: Option<Tokens>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub receipt: Receipt,
    /// True when the idempotency key had already been applied and this is
    /// the first answer again.
    pub replayed: bool,
}

#[derive(Debug, Serialize, Deserialize)]
struct IdempotencyRecord {
    fingerprint: String,
    receipt: Receipt,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct AccountRecord {
    #[serde(default)]
    pub available: Tokens,
    #[serde(default)]
    pub held: Tokens,
    /// How many ledger entries the account has had.
    #[serde(default)]
    pub entries: u64,
}

/// The hold or entry a capture, release or refund refers to.
#[derive(Debug, Default)]
struct Related {
    replay: Option<IdempotencyRecord>,
    account: Option<AccountRecord>,
    hold: Option<Hold>,
    refund_target: Option<RefundTarget>,
}

impl Store {
    /// Applies one balance operation exactly once per idempotency key.
    pub async fn apply(&self, request: BalanceRequest) -> Result<Applied, StoreError> {
        let related_key = request.related_key()?;
        let mut related = match &related_key {
            Some((key, _)) => self.load_related(&request, key).await?,
            None => Related::default(),
        };
        let mut expected = request
            .expected_available
            .or_else(|| related.account.as_ref().map(|account| account.available));
        let mut misses = 0;
        for attempt in 0..MAX_ATTEMPTS {
            if let Some(record) = related.replay.take() {
                return replay(&request, record);
            }
            if let Some((_, what)) = &related_key
                && related.hold.is_none()
                && related.refund_target.is_none()
            {
                return Err(StoreError::NotFound { what: what.clone() });
            }
            let now = self.now();
            let posting = ledger::posting(
                &request.movement,
                related.hold.as_ref(),
                related.refund_target.as_ref(),
                now,
            )?;
            let tx_id = TxId::generate(request.user);
            let receipt = Receipt {
                tx_id,
                kind: posting.kind,
                amount: posting.amount,
                created_at: now,
                expires_at: match request.movement {
                    Movement::Hold { ttl, .. } => Some(now + ttl),
                    _ => None,
                },
                // A pinned guess that cannot cover the debit makes the write
                // fail and hand back the real balance: an exact answer either way.
                balance_after: expected.and_then(|before| before.apply(posting.delta_available).ok().flatten()),
            };
            let entry = LedgerEntry {
                tx_id,
                kind: posting.kind,
                amount: posting.amount,
                delta_available: posting.delta_available,
                delta_held: posting.delta_held,
                idempotency_key: request.key.clone(),
                created_at: now,
                reference: request.reference.clone(),
                description: request.description.clone(),
                metadata: request.metadata.clone(),
                hold_id: match request.movement {
                    Movement::Capture { hold_id, .. } | Movement::Release { hold_id } => Some(hold_id),
                    Movement::Hold { .. } => Some(tx_id),
                    _ => None,
                },
                refund_of: match request.movement {
                    Movement::Refund { original, .. } => Some(original),
                    _ => None,
                },
                refundable: posting.kind.is_refundable().then_some(posting.amount),
            };
            let items = self.transaction_items(&request, &posting, &entry, &receipt, expected)?;
            let extra_start = items.len() - request.extra.len();

            let cancelled = match self.transact(items).await? {
                Ok(()) => {
                    return Ok(Applied {
                        receipt,
                        replayed: false,
                    });
                }
                Err(cancelled) => cancelled,
            };
            if cancelled.failed(0) {
                // The key was applied before, or by a concurrent call: answer as it did.
                let item = cancelled
                    .old_item(0)
                    .ok_or_else(|| StoreError::corrupt("idempotency record", "not returned"))?;
                return replay(&request, parse("idempotency record", item)?);
            }
            if let Some(index) = cancelled.first_failed(extra_start) {
                let item = cancelled.old_item(index).map(Box::new);
                return Err(StoreError::ExtraConditionFailed {
                    index: index - extra_start,
                    item,
                });
            }
            if cancelled.failed(1) {
                let account: AccountRecord = cancelled
                    .old_item(1)
                    .map(|item| parse("account", item))
                    .transpose()?
                    .unwrap_or_default();
                if let Some(requested) = posting.requires_available()
                    && account.available < requested
                {
                    return Err(DomainError::InsufficientTokens {
                        available: account.available,
                        requested,
                    }
                    .into());
                }
                if expected.is_some_and(|pinned| pinned != account.available) {
                    // Another write changed the balance since it was seen:
                    // pin to what it is now, or stop pinning if it keeps moving.
                    misses += 1;
                    expected = (misses < PINNED_ATTEMPTS).then_some(account.available);
                    continue;
                }
                return Err(StoreError::corrupt(
                    format!("account {}", request.user),
                    "held tokens do not cover an active hold",
                ));
            }
            if cancelled.failed(3)
                && let Some((key, _)) = &related_key
            {
                // The hold or refunded entry changed under us: decide again from its new state.
                related = self.load_related(&request, key).await?;
            }
            // Otherwise the fresh entry id collided: try again with a new one.
            backoff(attempt).await;
        }
        Err(StoreError::Contention {
            what: format!("account {}", request.user),
        })
    }

    fn transaction_items(
        &self,
        request: &BalanceRequest,
        posting: &Posting,
        entry: &LedgerEntry,
        receipt: &Receipt,
        expected: Option<Tokens>,
    ) -> Result<Vec<TransactWriteItem>, StoreError> {
        let user = request.user;
        let idempotency = IdempotencyRecord {
            fingerprint: request.fingerprint(),
            receipt: receipt.clone(),
        };
        let mut items = vec![
            self.put_new(record(
                &keys::idempotency(user, &request.key),
                "idempotency",
                &idempotency,
            )?)?,
            self.account_update(user, posting, entry.created_at, expected)?,
            self.put_new(record(&keys::ledger_entry(entry.tx_id), "ledger_entry", entry)?)?,
        ];
        match &request.movement {
            Movement::Hold { tokens, .. } => {
                let hold = Hold {
                    hold_id: entry.tx_id,
                    tokens: *tokens,
                    status: HoldStatus::Active,
                    expires_at: receipt.expires_at.unwrap_or(entry.created_at),
                    captured: None,
                };
                let mut item = record(&keys::hold(entry.tx_id), "hold", &hold)?;
                // Listed as due at its expiry until it is closed, so the
                // sweep gives back what a crashed caller left held.
                item.insert(keys::DUE_PK.to_owned(), s(keys::hold_expiry_due(entry.tx_id)));
                item.insert(keys::DUE_AT.to_owned(), n(hold.expires_at.timestamp()));
                items.push(self.put_new(item)?);
            }
            Movement::Capture { hold_id, tokens } => {
                items.push(self.close_hold(*hold_id, HoldStatus::Captured, Some(*tokens))?)
            }
            Movement::Release { hold_id } => items.push(self.close_hold(*hold_id, HoldStatus::Released, None)?),
            Movement::Refund { original, tokens } => items.push(self.consume_refundable(*original, *tokens)?),
            Movement::Credit { .. } | Movement::Debit { .. } => {}
        }
        items.push(self.count_tokens(user, posting.kind, posting.amount)?);
        items.extend(request.extra.iter().cloned());
        Ok(items)
    }

    fn put_new(&self, item: Item) -> Result<TransactWriteItem, StoreError> {
        let put = Put::builder()
            .table_name(self.table())
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", keys::PK)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .build()
            .map_err(|e| StoreError::corrupt("put", e))?;
        Ok(TransactWriteItem::builder().put(put).build())
    }

    fn account_update(
        &self,
        user: UserId,
        posting: &Posting,
        now: DateTime<Utc>,
        expected: Option<Tokens>,
    ) -> Result<TransactWriteItem, StoreError> {
        let mut update = Update::builder()
            .table_name(self.table())
            .set_key(Some(keys::account(user).to_item()))
            .update_expression(
                "SET #updated = :now, #entity = :entity ADD #available :delta_available, #held :delta_held, #entries :one",
            )
            .expression_attribute_names("#available", "available")
            .expression_attribute_names("#held", "held")
            .expression_attribute_names("#entries", "entries")
            .expression_attribute_names("#updated", "updated_at")
            .expression_attribute_names("#entity", keys::ENTITY)
            .expression_attribute_values(":delta_available", n(posting.delta_available))
            .expression_attribute_values(":delta_held", n(posting.delta_held))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":now", s(now.to_rfc3339()))
            .expression_attribute_values(":entity", s("account"))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        let mut conditions = Vec::new();
        if let Some(pinned) = expected {
            // A missing account is a zero balance.
            conditions.push(if pinned == Tokens::ZERO {
                "(attribute_not_exists(#available) OR #available = :pinned)"
            } else {
                "#available = :pinned"
            });
            update = update.expression_attribute_values(":pinned", n(pinned));
        }
        if let Some(available) = posting.requires_available() {
            conditions.push("#available >= :need_available");
            update = update.expression_attribute_values(":need_available", n(available));
        }
        if let Some(held) = posting.requires_held() {
            conditions.push("#held >= :need_held");
            update = update.expression_attribute_values(":need_held", n(held));
        }
        if !conditions.is_empty() {
            update = update.condition_expression(conditions.join(" AND "));
        }
        let update = update.build().map_err(|e| StoreError::corrupt("account update", e))?;
        Ok(TransactWriteItem::builder().update(update).build())
    }

    fn close_hold(
        &self,
        hold_id: TxId,
        status: HoldStatus,
        captured: Option<Tokens>,
    ) -> Result<TransactWriteItem, StoreError> {
        let mut update = Update::builder()
            .table_name(self.table())
            .set_key(Some(keys::hold(hold_id).to_item()))
            .condition_expression("#status = :active")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":active", s(HoldStatus::Active.as_str()))
            .expression_attribute_values(":status", s(status.as_str()));
        // Closed holds leave the due index: nothing is left to give back.
        update = update
            .expression_attribute_names("#due_pk", keys::DUE_PK)
            .expression_attribute_names("#due_at", keys::DUE_AT);
        update = match captured {
            Some(tokens) => update
                .update_expression("SET #status = :status, #captured = :captured REMOVE #due_pk, #due_at")
                .expression_attribute_names("#captured", "captured")
                .expression_attribute_values(":captured", n(tokens)),
            None => update.update_expression("SET #status = :status REMOVE #due_pk, #due_at"),
        };
        let update = update.build().map_err(|e| StoreError::corrupt("hold update", e))?;
        Ok(TransactWriteItem::builder().update(update).build())
    }

    fn consume_refundable(&self, original: TxId, tokens: Tokens) -> Result<TransactWriteItem, StoreError> {
        let update = Update::builder()
            .table_name(self.table())
            .set_key(Some(keys::ledger_entry(original).to_item()))
            .update_expression("SET #refundable = #refundable - :tokens")
            .condition_expression("#refundable >= :tokens")
            .expression_attribute_names("#refundable", "refundable")
            .expression_attribute_values(":tokens", n(tokens))
            .build()
            .map_err(|e| StoreError::corrupt("refund update", e))?;
        Ok(TransactWriteItem::builder().update(update).build())
    }

    /// Reads the idempotency record, the account and the hold or entry a
    /// capture, release or refund refers to, in one consistent batch.
    async fn load_related(&self, request: &BalanceRequest, related: &Key) -> Result<Related, StoreError> {
        let idempotency_key = keys::idempotency(request.user, &request.key);
        let account_key = keys::account(request.user);
        let mut found = Related {
            account: Some(AccountRecord::default()),
            ..Related::default()
        };
        for item in self
            .batch_get(vec![idempotency_key.clone(), account_key.clone(), related.clone()])
            .await?
        {
            let key = Key::of(&item);
            if key.as_ref() == Some(&idempotency_key) {
                found.replay = Some(parse("idempotency record", item)?);
                continue;
            }
            if key.as_ref() == Some(&account_key) {
                found.account = Some(parse("account", item)?);
                continue;
            }
            match &request.movement {
                Movement::Refund { .. } => {
                    let entry: LedgerEntry = parse("ledger entry", item)?;
                    found.refund_target = Some(RefundTarget {
                        tx_id: entry.tx_id,
                        kind: entry.kind,
                        refundable: entry.refundable.unwrap_or(Tokens::ZERO),
                    });
                }
                _ => found.hold = Some(parse("hold", item)?),
            }
        }
        Ok(found)
    }

    /// Consistent reads of up to 100 keys, following unprocessed keys.
    pub(crate) async fn batch_get(&self, keys: Vec<Key>) -> Result<Vec<Item>, StoreError> {
        let mut found = Vec::with_capacity(keys.len());
        let request = KeysAndAttributes::builder()
            .set_keys(Some(keys.iter().map(Key::to_item).collect()))
            .consistent_read(true)
            .build()
            .map_err(|e| StoreError::corrupt("batch get", e))?;
        let mut pending = Some(std::collections::HashMap::from([(self.table().to_owned(), request)]));
        let mut attempt = 0;
        while let Some(request) = pending.take().filter(|r| !r.is_empty()) {
            if attempt > 0 {
                backoff(attempt).await;
            }
            attempt += 1;
            if attempt > MAX_ATTEMPTS {
                return Err(StoreError::Contention {
                    what: "batch get".into(),
                });
            }
            let output = self
                .client
                .batch_get_item()
                .set_request_items(Some(request))
                .send()
                .await
                .map_err(|e| StoreError::from_sdk("BatchGetItem", e))?;
            if let Some(mut responses) = output.responses {
                found.extend(responses.remove(self.table()).unwrap_or_default());
            }
            pending = output.unprocessed_keys;
        }
        Ok(found)
    }
}

fn replay(request: &BalanceRequest, record: IdempotencyRecord) -> Result<Applied, StoreError> {
    if record.fingerprint != request.fingerprint() {
        return Err(StoreError::KeyReused {
            key: request.key.to_string(),
        });
    }
    Ok(Applied {
        receipt: record.receipt,
        replayed: true,
    })
}
