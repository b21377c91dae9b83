//! The money invariants of DESIGN.md, checked over a whole table after a
//! test has done its worst: every balance equals its ledger and none is
//! negative, each paid invoice credited once, no promo code past its
//! limits, each subscription period renewed once, each committed
//! notification delivered exactly once.

use std::collections::{BTreeMap, HashMap};

use aws_sdk_dynamodb::types::AttributeValue;
use tokenbill::Store;
use tokenbill::domain::EntryKind;
use tokenbill::domain::invoice::{Invoice, InvoiceStatus};
use tokenbill::domain::ledger::LedgerEntry;
use tokenbill::domain::notification::{Delivery, Notification};
use tokenbill::domain::promo::PromoCode;
use tokenbill::domain::subscription::Subscription;
use tokenbill::store::StoreError;
use tokenbill::store::item::parse;
use tokenbill::store::keys::ENTITY;

/// One broken invariant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// The balance differs from its ledger, or is negative (`Store::audit`).
    Ledger { user: i64, problems: Vec<String> },
    /// A paid (or refunded) invoice credited other than once, or an unpaid one credited.
    InvoiceCredits {
        invoice: String,
        status: InvoiceStatus,
        credits: usize,
    },
    /// More redemptions than the code allows, or its counter disagrees with its uses.
    PromoTotal {
        code: String,
        redemptions: u64,
        uses: u64,
        limit: Option<u64>,
    },
    PromoPerUser {
        code: String,
        user: i64,
        uses: u64,
        limit: u32,
    },
    /// One (subscription, period) granted other than once.
    Renewal { user: i64, period: u32, credits: usize },
    /// A committed notification not (yet) delivered.
    Undelivered { id: String, delivery: Delivery },
    /// Messages a user got from the notifier differ from their sent notifications.
    Deliveries { user: i64, sent: usize, delivered: usize },
}

/// Everything in the table that the invariants speak of.
#[derive(Debug, Default)]
struct Snapshot {
    users: Vec<i64>,
    ledger: Vec<LedgerEntry>,
    invoices: Vec<Invoice>,
    promos: Vec<PromoCode>,
    /// (code, user) → uses.
    promo_uses: Vec<(String, i64, u64)>,
    subscriptions: Vec<Subscription>,
    notifications: Vec<Notification>,
}

/// Checks every invariant over `store`'s table. `delivered` counts the
/// messages each user (chat id) got from the notifier.
pub async fn check(store: &Store, delivered: &HashMap<i64, usize>) -> Result<Vec<Violation>, StoreError> {
    let snapshot = snapshot(store).await?;
    let mut violations = Vec::new();
    for &user in &snapshot.users {
        let report = store.audit(tokenbill_user(user)).await?;
        if !report.is_ok() {
            violations.push(Violation::Ledger {
                user,
                problems: report.problems,
            });
        }
    }
    invoice_credits(&snapshot, &mut violations);
    promo_limits(&snapshot, &mut violations);
    renewals(&snapshot, &mut violations);
    deliveries(&snapshot, delivered, &mut violations);
    Ok(violations)
}

fn tokenbill_user(id: i64) -> tokenbill::domain::UserId {
    tokenbill::domain::UserId::new(id).expect("user ids in the table are valid")
}

/// Purchase and renewal credits per invoice, from their `invoice:<id>` reference.
fn credits_per_invoice(ledger: &[LedgerEntry]) -> HashMap<&str, usize> {
    let mut credits = HashMap::new();
    for entry in ledger {
        if !matches!(entry.kind, EntryKind::Purchase | EntryKind::Renewal) {
            continue;
        }
        if let Some(invoice) = entry.reference.as_deref().and_then(|r| r.strip_prefix("invoice:")) {
            *credits.entry(invoice).or_insert(0) += 1;
        }
    }
    credits
}

fn invoice_credits(snapshot: &Snapshot, violations: &mut Vec<Violation>) {
    let credits = credits_per_invoice(&snapshot.ledger);
    for invoice in &snapshot.invoices {
        let count = credits.get(invoice.id.as_str()).copied().unwrap_or(0);
        let expected = usize::from(matches!(invoice.status, InvoiceStatus::Paid | InvoiceStatus::Refunded));
        if count != expected {
            violations.push(Violation::InvoiceCredits {
                invoice: invoice.id.to_string(),
                status: invoice.status,
                credits: count,
            });
        }
    }
}

fn promo_limits(snapshot: &Snapshot, violations: &mut Vec<Violation>) {
    for promo in &snapshot.promos {
        let code = promo.code.as_str();
        let mut uses = 0;
        for (_, user, n) in snapshot.promo_uses.iter().filter(|(c, _, _)| c == code) {
            uses += n;
            if *n > u64::from(promo.per_user_limit) {
                violations.push(Violation::PromoPerUser {
                    code: code.to_owned(),
                    user: *user,
                    uses: *n,
                    limit: promo.per_user_limit,
                });
            }
        }
        let over = promo.max_redemptions.is_some_and(|limit| promo.redemptions > limit);
        if over || promo.redemptions != uses {
            violations.push(Violation::PromoTotal {
                code: code.to_owned(),
                redemptions: promo.redemptions,
                uses,
                limit: promo.max_redemptions,
            });
        }
    }
}

/// Renewal invoices are `ren-<user>-<period>-<attempt>`: at most one
/// attempt of a period may credit, and a subscription's period number is
/// one more than the renewals it was granted.
fn renewals(snapshot: &Snapshot, violations: &mut Vec<Violation>) {
    let mut per_period: BTreeMap<(i64, u32), usize> = BTreeMap::new();
    for entry in snapshot.ledger.iter().filter(|e| e.kind == EntryKind::Renewal) {
        let Some(rest) = entry.reference.as_deref().and_then(|r| r.strip_prefix("invoice:ren-")) else {
            continue;
        };
        let mut parts = rest.split('-');
        let (Some(user), Some(period)) = (parts.next(), parts.next()) else {
            continue;
        };
        if let (Ok(user), Ok(period)) = (user.parse(), period.parse()) {
            *per_period.entry((user, period)).or_insert(0) += 1;
        }
    }
    for (&(user, period), &credits) in &per_period {
        if credits != 1 {
            violations.push(Violation::Renewal { user, period, credits });
        }
    }
    for subscription in &snapshot.subscriptions {
        let user = subscription.user.get();
        for period in 2..=subscription.period {
            if !per_period.contains_key(&(user, period)) {
                violations.push(Violation::Renewal {
                    user,
                    period,
                    credits: 0,
                });
            }
        }
    }
}

fn deliveries(snapshot: &Snapshot, delivered: &HashMap<i64, usize>, violations: &mut Vec<Violation>) {
    let mut sent: HashMap<i64, usize> = HashMap::new();
    for notification in &snapshot.notifications {
        match notification.delivery {
            Delivery::Sent => *sent.entry(notification.user.get()).or_insert(0) += 1,
            delivery => violations.push(Violation::Undelivered {
                id: notification.id.to_string(),
                delivery,
            }),
        }
    }
    let mut users: Vec<i64> = sent.keys().chain(delivered.keys()).copied().collect();
    users.sort_unstable();
    users.dedup();
    for user in users {
        let (sent, delivered) = (
            sent.get(&user).copied().unwrap_or(0),
            delivered.get(&user).copied().unwrap_or(0),
        );
        if sent != delivered {
            violations.push(Violation::Deliveries { user, sent, delivered });
        }
    }
}

/// Reads the whole table (consistently) and sorts what it found.
async fn snapshot(store: &Store) -> Result<Snapshot, StoreError> {
    let mut snapshot = Snapshot::default();
    let mut start = None;
    loop {
        let page = store
            .client()
            .scan()
            .table_name(store.table())
            .consistent_read(true)
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(|e| StoreError::from_sdk("Scan", e))?;
        for item in page.items.unwrap_or_default() {
            file(&mut snapshot, item)?;
        }
        start = page.last_evaluated_key;
        if start.is_none() {
            return Ok(snapshot);
        }
    }
}

fn file(snapshot: &mut Snapshot, item: HashMap<String, AttributeValue>) -> Result<(), StoreError> {
    let text = |name: &str| item.get(name).and_then(|v| v.as_s().ok()).cloned().unwrap_or_default();
    let (pk, sk) = (text("pk"), text("sk"));
    // Every user with a profile or an account, whatever wrote the account.
    if (sk == "PROFILE" || sk == "ACCOUNT")
        && let Some(id) = pk.strip_prefix("USER#").and_then(|id| id.parse().ok())
        && !snapshot.users.contains(&id)
    {
        snapshot.users.push(id);
    }
    let entity = text(ENTITY);
    match entity.as_str() {
        "ledger_entry" => snapshot.ledger.push(parse(&entity, item)?),
        "invoice" => snapshot.invoices.push(parse(&entity, item)?),
        "promo_code" => snapshot.promos.push(parse(&entity, item)?),
        "promo_use" => {
            let code = pk.trim_start_matches("PROMO#").to_owned();
            let user = sk.trim_start_matches("USER#").parse().unwrap_or_default();
            let uses = tokenbill::store::item::get_u64(&item, "uses")?;
            snapshot.promo_uses.push((code, user, uses));
        }
        "subscription" => snapshot.subscriptions.push(parse(&entity, item)?),
        "notification" => snapshot.notifications.push(parse(&entity, item)?),
        _ => {}
    }
    Ok(())
}
