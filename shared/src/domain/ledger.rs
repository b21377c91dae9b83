//! The ledger: every change of a balance is an entry, and the balance is
//! always the sum of its entries.
//!
//! A balance has two buckets: `available` (spendable) and `held` (reserved
//! by holds). Each entry records a signed delta for both buckets; the store
//! applies the deltas and writes the entry in one transaction, guarded by
//! conditions (`available >= n` for debits), so the sums always match.

use std::fmt;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use super::{DomainError, IdempotencyKey, Tokens, TxId};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Balance {
    pub available: Tokens,
    pub held: Tokens,
}

impl Balance {
    pub fn total(&self) -> Result<Tokens, DomainError> {
        self.available.checked_add(self.held)
    }

    /// The balance after a posting, or an error if a bucket would go negative.
    pub fn apply(&self, posting: &Posting) -> Result<Balance, DomainError> {
        let available = self
            .available
            .apply(posting.delta_available)?
            .ok_or(DomainError::InsufficientTokens {
                available: self.available,
                requested: posting.amount,
            })?;
        let held = self
            .held
            .apply(posting.delta_held)?
            .ok_or_else(|| DomainError::invalid("posting", "held tokens would go negative"))?;
        Ok(Balance { available, held })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    Purchase,
    Bonus,
    Grant,
    Spend,
    Hold,
    Capture,
    Release,
    Refund,
    Renewal,
    Adjustment,
}

impl EntryKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::Purchase => "purchase",
            EntryKind::Bonus => "bonus",
            EntryKind::Grant => "grant",
            EntryKind::Spend => "spend",
            EntryKind::Hold => "hold",
            EntryKind::Capture => "capture",
            EntryKind::Release => "release",
            EntryKind::Refund => "refund",
            EntryKind::Renewal => "renewal",
            EntryKind::Adjustment => "adjustment",
        }
    }

    /// Entries that took tokens for good and so may be refunded.
    pub fn is_refundable(self) -> bool {
        matches!(self, EntryKind::Spend | EntryKind::Capture)
    }
}

impl fmt::Display for EntryKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why tokens are added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreditKind {
    Purchase,
    Bonus,
    Grant,
    Renewal,
    Adjustment,
}

/// Why tokens are taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DebitKind {
    Spend,
    Adjustment,
}

/// What a caller asks to happen to a balance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Movement {
    Credit {
        kind: CreditKind,
        tokens: Tokens,
    },
    Debit {
        kind: DebitKind,
        tokens: Tokens,
    },
    /// Moves tokens from available to held until captured, released or expired.
    Hold {
        tokens: Tokens,
        ttl: Duration,
    },
    /// Takes `tokens` of a hold for good and returns the rest to available.
    Capture {
        hold_id: TxId,
        tokens: Tokens,
    },
    /// Returns all of a hold to available.
    Release {
        hold_id: TxId,
    },
    /// Gives back up to what is left of a spend or capture.
    Refund {
        original: TxId,
        tokens: Tokens,
    },
}

impl Movement {
    pub fn kind(&self) -> EntryKind {
        match self {
            Movement::Credit { kind, .. } => match kind {
                CreditKind::Purchase => EntryKind::Purchase,
                CreditKind::Bonus => EntryKind::Bonus,
                CreditKind::Grant => EntryKind::Grant,
                CreditKind::Renewal => EntryKind::Renewal,
                CreditKind::Adjustment => EntryKind::Adjustment,
            },
            Movement::Debit {
                kind: DebitKind::Spend, ..
            } => EntryKind::Spend,
            Movement::Debit {
                kind: DebitKind::Adjustment,
                ..
            } => EntryKind::Adjustment,
            Movement::Hold { .. } => EntryKind::Hold,
            Movement::Capture { .. } => EntryKind::Capture,
            Movement::Release { .. } => EntryKind::Release,
            Movement::Refund { .. } => EntryKind::Refund,
        }
    }

    /// What makes two requests "the same request" under one idempotency
    /// key: the effect asked for, not incidental text.
    pub fn fingerprint(&self) -> String {
        let kind = self.kind();
        match self {
            Movement::Credit { tokens, .. } => format!("{kind}:+{tokens}"),
            Movement::Debit { tokens, .. } => format!("{kind}:-{tokens}"),
            Movement::Hold { tokens, ttl } => format!("{kind}:{tokens}:{}s", ttl.num_seconds()),
            Movement::Capture { hold_id, tokens } => format!("{kind}:{hold_id}:{tokens}"),
            Movement::Release { hold_id } => format!("{kind}:{hold_id}"),
            Movement::Refund { original, tokens } => format!("{kind}:{original}:{tokens}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HoldStatus {
    Active,
    Captured,
    Released,
}

impl HoldStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            HoldStatus::Active => "active",
            HoldStatus::Captured => "captured",
            HoldStatus::Released => "released",
        }
    }
}

/// A hold as stored: how much it reserves and until when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    pub hold_id: TxId,
    pub tokens: Tokens,
    pub status: HoldStatus,
    pub expires_at: DateTime<Utc>,
    pub captured: Option<Tokens>,
}

impl Hold {
    pub fn is_expired(&self, now: DateTime<Utc>) -> bool {
        now >= self.expires_at
    }
}

/// The part of an earlier entry a refund needs to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefundTarget {
    pub tx_id: TxId,
    pub kind: EntryKind,
    pub refundable: Tokens,
}

/// The effect of one movement on a balance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Posting {
    pub kind: EntryKind,
    /// The amount the entry is about (spent, captured, credited...).
    pub amount: Tokens,
    pub delta_available: i64,
    pub delta_held: i64,
}

/// Decides what a movement does, given the hold or earlier entry it refers
/// to (loaded by the store). Pure: same input, same answer. Whether the
/// balance covers a debit is not decided here but by the write's condition
/// ([`Posting::requires_available`]), so no read is needed first.
pub fn posting(
    movement: &Movement,
    hold: Option<&Hold>,
    refund_target: Option<&RefundTarget>,
    now: DateTime<Utc>,
) -> Result<Posting, DomainError> {
    let kind = movement.kind();
    let posting = match movement {
        Movement::Credit { tokens, .. } => Posting {
            kind,
            amount: *tokens,
            delta_available: tokens.as_i64(),
            delta_held: 0,
        },
        Movement::Debit { tokens, .. } => Posting {
            kind,
            amount: *tokens,
            delta_available: -tokens.as_i64(),
            delta_held: 0,
        },
        Movement::Hold { tokens, ttl } => {
            if *ttl <= Duration::zero() {
                return Err(DomainError::invalid("hold", "time to live must be positive"));
            }
            Posting {
                kind,
                amount: *tokens,
                delta_available: -tokens.as_i64(),
                delta_held: tokens.as_i64(),
            }
        }
        Movement::Capture { tokens, .. } => {
            let hold = active_hold(hold)?;
            if hold.is_expired(now) {
                return Err(DomainError::HoldExpired {
                    hold_id: hold.hold_id.to_string(),
                });
            }
            if *tokens > hold.tokens {
                return Err(DomainError::CaptureExceedsHold {
                    held: hold.tokens,
                    requested: *tokens,
                });
            }
            let returned = hold.tokens.checked_sub(*tokens).unwrap_or(Tokens::ZERO);
            Posting {
                kind,
                amount: *tokens,
                delta_available: returned.as_i64(),
                delta_held: -hold.tokens.as_i64(),
            }
        }
        Movement::Release { .. } => {
            let hold = active_hold(hold)?;
            Posting {
                kind,
                amount: hold.tokens,
                delta_available: hold.tokens.as_i64(),
                delta_held: -hold.tokens.as_i64(),
            }
        }
        Movement::Refund { original, tokens } => {
            let target = refund_target
                .ok_or_else(|| DomainError::invalid("refund", format!("transaction {original} not found")))?;
            if !target.kind.is_refundable() {
                return Err(DomainError::NotRefundable {
                    tx_id: target.tx_id.to_string(),
                    kind: target.kind.as_str(),
                });
            }
            if *tokens > target.refundable {
                return Err(DomainError::RefundExceedsRemaining {
                    remaining: target.refundable,
                    requested: *tokens,
                });
            }
            Posting {
                kind,
                amount: *tokens,
                delta_available: tokens.as_i64(),
                delta_held: 0,
            }
        }
    };
    Ok(posting)
}

impl Posting {
    /// The available tokens the balance must have for this posting: the
    /// write's condition.
    pub fn requires_available(&self) -> Option<Tokens> {
        (self.delta_available < 0).then(|| Tokens::new(self.delta_available.unsigned_abs()).unwrap_or(Tokens::ZERO))
    }

    /// The held tokens the balance must have (captures and releases).
    pub fn requires_held(&self) -> Option<Tokens> {
        (self.delta_held < 0).then(|| Tokens::new(self.delta_held.unsigned_abs()).unwrap_or(Tokens::ZERO))
    }
}

fn active_hold(hold: Option<&Hold>) -> Result<&Hold, DomainError> {
    let hold = hold.ok_or_else(|| DomainError::invalid("hold", "not found"))?;
    if hold.status != HoldStatus::Active {
        return Err(DomainError::HoldNotActive {
            hold_id: hold.hold_id.to_string(),
            status: hold.status.as_str(),
        });
    }
    Ok(hold)
}

/// One entry of a user's ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEntry {
    pub tx_id: TxId,
    pub kind: EntryKind,
    pub amount: Tokens,
    pub delta_available: i64,
    pub delta_held: i64,
    pub idempotency_key: IdempotencyKey,
    pub created_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// What the caller attached (JSON text), e.g. a spend API request's metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<String>,
    /// The hold this entry created, captured or released.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_id: Option<TxId>,
    /// The entry this one refunds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refund_of: Option<TxId>,
    /// For spends and captures: how much can still be refunded. The only
    /// field that changes after an entry is written (refunds decrement it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refundable: Option<Tokens>,
}

/// What an audit of one user found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditReport {
    pub account: Balance,
    /// How many entries the account says it has had.
    pub account_entries: u64,
    pub ledger: Balance,
    pub entries: u64,
    pub problems: Vec<String>,
}

impl AuditReport {
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Sums `entries` and checks them against the account: both buckets match
/// and no entry is missing or extra.
pub fn audit(account: Balance, account_entries: u64, entries: &[LedgerEntry]) -> AuditReport {
    let mut problems = Vec::new();
    let (available, held) = entries.iter().fold((0i128, 0i128), |(a, h), entry| {
        (a + i128::from(entry.delta_available), h + i128::from(entry.delta_held))
    });
    if entries.len() as u64 != account_entries {
        problems.push(format!(
            "account counts {account_entries} entries but the ledger has {}",
            entries.len()
        ));
    }
    let ledger = Balance {
        available: to_tokens(available, &mut problems),
        held: to_tokens(held, &mut problems),
    };
    if ledger != account {
        problems.push(format!(
            "account holds {}/{} (available/held) but the ledger sums to {available}/{held}",
            account.available, account.held
        ));
    }
    AuditReport {
        account,
        account_entries,
        ledger,
        entries: entries.len() as u64,
        problems,
    }
}

fn to_tokens(value: i128, problems: &mut Vec<String>) -> Tokens {
    match u64::try_from(value).ok().and_then(|v| Tokens::new(v).ok()) {
        Some(tokens) => tokens,
        None => {
            problems.push(format!("ledger sum {value} is out of range"));
            Tokens::ZERO
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::UserId;

    fn t(n: u64) -> Tokens {
        Tokens::new(n).unwrap()
    }

    fn bal(available: u64, held: u64) -> Balance {
        Balance {
            available: t(available),
            held: t(held),
        }
    }

    fn tx() -> TxId {
        TxId::generate(UserId::new(7).unwrap())
    }

    fn hold(tokens: u64, status: HoldStatus, expires_in: i64) -> Hold {
        Hold {
            hold_id: tx(),
            tokens: t(tokens),
            status,
            expires_at: Utc::now() + Duration::seconds(expires_in),
            captured: None,
        }
    }

    fn apply(
        balance: Balance,
        movement: Movement,
        hold: Option<&Hold>,
        target: Option<&RefundTarget>,
    ) -> Result<Balance, DomainError> {
        let posting = posting(&movement, hold, target, Utc::now())?;
        balance.apply(&posting)
    }

    #[test]
    fn debits_never_overdraw() {
        let spend = |n| Movement::Debit {
            kind: DebitKind::Spend,
            tokens: t(n),
        };
        assert_eq!(apply(bal(10, 0), spend(10), None, None).unwrap(), bal(0, 0));
        assert_eq!(
            apply(bal(10, 5), spend(11), None, None),
            Err(DomainError::InsufficientTokens {
                available: t(10),
                requested: t(11)
            })
        );
    }

    #[test]
    fn holds_move_tokens_between_buckets() {
        let held = apply(
            bal(100, 0),
            Movement::Hold {
                tokens: t(40),
                ttl: Duration::seconds(60),
            },
            None,
            None,
        )
        .unwrap();
        assert_eq!(held, bal(60, 40));
        let active = hold(40, HoldStatus::Active, 60);
        let captured = apply(
            held,
            Movement::Capture {
                hold_id: tx(),
                tokens: t(25),
            },
            Some(&active),
            None,
        )
        .unwrap();
        assert_eq!(captured, bal(75, 0), "15 of the 40 held come back");
        let released = apply(held, Movement::Release { hold_id: tx() }, Some(&active), None).unwrap();
        assert_eq!(released, bal(100, 0));
    }

    #[test]
    fn captures_respect_the_hold() {
        let held = bal(60, 40);
        let too_much = Movement::Capture {
            hold_id: tx(),
            tokens: t(41),
        };
        assert_eq!(
            apply(held, too_much, Some(&hold(40, HoldStatus::Active, 60)), None),
            Err(DomainError::CaptureExceedsHold {
                held: t(40),
                requested: t(41)
            })
        );
        let expired = hold(40, HoldStatus::Active, -1);
        let capture = Movement::Capture {
            hold_id: tx(),
            tokens: t(1),
        };
        assert!(matches!(
            apply(held, capture.clone(), Some(&expired), None),
            Err(DomainError::HoldExpired { .. })
        ));
        // An expired hold can still be released: that is how it gives tokens back.
        assert_eq!(
            apply(held, Movement::Release { hold_id: tx() }, Some(&expired), None).unwrap(),
            bal(100, 0)
        );
        let done = hold(40, HoldStatus::Captured, 60);
        assert!(matches!(
            apply(held, capture, Some(&done), None),
            Err(DomainError::HoldNotActive { .. })
        ));
    }

    #[test]
    fn refunds_are_bounded_by_what_is_left() {
        let target = RefundTarget {
            tx_id: tx(),
            kind: EntryKind::Spend,
            refundable: t(30),
        };
        let refund = |n| Movement::Refund {
            original: tx(),
            tokens: t(n),
        };
        assert_eq!(apply(bal(0, 0), refund(30), None, Some(&target)).unwrap(), bal(30, 0));
        assert!(matches!(
            apply(bal(0, 0), refund(31), None, Some(&target)),
            Err(DomainError::RefundExceedsRemaining { .. })
        ));
        let credit = RefundTarget {
            kind: EntryKind::Purchase,
            ..target
        };
        assert!(matches!(
            apply(bal(0, 0), refund(1), None, Some(&credit)),
            Err(DomainError::NotRefundable { .. })
        ));
    }

    #[test]
    fn fingerprints_tell_requests_apart() {
        let a = Movement::Credit {
            kind: CreditKind::Purchase,
            tokens: t(100),
        };
        let b = Movement::Credit {
            kind: CreditKind::Purchase,
            tokens: t(101),
        };
        let c = Movement::Credit {
            kind: CreditKind::Grant,
            tokens: t(100),
        };
        assert_ne!(a.fingerprint(), b.fingerprint());
        assert_ne!(a.fingerprint(), c.fingerprint());
        assert_eq!(a.fingerprint(), a.clone().fingerprint());
    }

    fn entry(da: i64, dh: i64) -> LedgerEntry {
        LedgerEntry {
            tx_id: tx(),
            kind: EntryKind::Adjustment,
            amount: t(da.unsigned_abs()),
            delta_available: da,
            delta_held: dh,
            idempotency_key: IdempotencyKey::new("k").unwrap(),
            created_at: Utc::now(),
            reference: None,
            description: None,
            metadata: None,
            hold_id: None,
            refund_of: None,
            refundable: None,
        }
    }

    #[test]
    fn audit_checks_sums_and_counts() {
        let good = vec![entry(100, 0), entry(-30, 30), entry(10, -30)];
        assert!(audit(bal(80, 0), 3, &good).is_ok());
        assert!(!audit(bal(81, 0), 3, &good).is_ok(), "account differs from the ledger");
        assert!(!audit(bal(80, 1), 3, &good).is_ok(), "held differs from the ledger");
        assert!(!audit(bal(80, 0), 4, &good).is_ok(), "an entry is missing");
        let negative = vec![entry(-5, 0)];
        assert!(!audit(bal(0, 0), 1, &negative).is_ok(), "a negative sum is a problem");
    }

    #[test]
    fn postings_state_their_conditions() {
        let spend = posting(
            &Movement::Debit {
                kind: DebitKind::Spend,
                tokens: t(7),
            },
            None,
            None,
            Utc::now(),
        )
        .unwrap();
        assert_eq!((spend.requires_available(), spend.requires_held()), (Some(t(7)), None));
        let credit = posting(
            &Movement::Credit {
                kind: CreditKind::Bonus,
                tokens: t(7),
            },
            None,
            None,
            Utc::now(),
        )
        .unwrap();
        assert_eq!((credit.requires_available(), credit.requires_held()), (None, None));
        let active = hold(40, HoldStatus::Active, 60);
        let capture = posting(
            &Movement::Capture {
                hold_id: tx(),
                tokens: t(40),
            },
            Some(&active),
            None,
            Utc::now(),
        )
        .unwrap();
        assert_eq!(
            (capture.requires_available(), capture.requires_held()),
            (None, Some(t(40)))
        );
        let zero_ttl = Movement::Hold {
            tokens: t(1),
            ttl: Duration::zero(),
        };
        assert!(posting(&zero_ttl, None, None, Utc::now()).is_err());
    }
}
