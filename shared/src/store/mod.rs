//! The DynamoDB single-table store. Domain rules decide; this module loads
//! what they need and writes what they decided, atomically.

mod balance;
pub mod error;
mod holds;
mod invoices;
pub mod item;
pub mod keys;
mod ledger;
mod notifications;
mod promos;
mod service_keys;
mod stats;
mod subscriptions;
mod tariffs;
mod transact;
mod updates;
mod users;
mod views;

use std::sync::Arc;

use aws_sdk_dynamodb::Client;

pub use balance::{Applied, BalanceRequest, Receipt};
pub use error::StoreError;
pub use invoices::{DEFAULT_INVOICE_TTL, InvoiceDraft, NewInvoice, Payment, PaymentProof};
pub use ledger::LedgerPage;
pub use notifications::{NotificationClaim, REPUBLISH_AFTER};
pub use promos::PromoActivation;
pub use service_keys::RateSlot;
pub use stats::DailyStats;
pub use subscriptions::{renewal_invoice_id, stars_renewal_invoice_id};
pub use updates::{Claim, ClaimMode, UPDATE_LEASE};
pub use users::UserChange;
pub use views::UserView;

use crate::clock::{Clock, SystemClock};

/// A handle on the table. Cheap to clone: build it once per cold start.
#[derive(Debug, Clone)]
pub struct Store {
    client: Client,
    table: Arc<str>,
    clock: Arc<dyn Clock>,
    /// Per-subscription schedules, moved after each subscription write.
    timers: Option<Arc<crate::timers::SubscriptionTimers>>,
}

impl Store {
    pub fn new(client: Client, table: impl Into<Arc<str>>) -> Self {
        Self {
            client,
            table: table.into(),
            clock: Arc::new(SystemClock),
            timers: None,
        }
    }

    /// Keeps each subscription's one-time schedule at its next action
    /// time (without, only the rate sweep wakes subscriptions).
    pub fn with_timers(mut self, timers: Option<crate::timers::SubscriptionTimers>) -> Self {
        self.timers = timers.map(Arc::new);
        self
    }

    pub fn timers(&self) -> Option<&crate::timers::SubscriptionTimers> {
        self.timers.as_deref()
    }

    /// Replaces the clock (tests use a [`crate::ManualClock`]).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.clock.now()
    }
}
