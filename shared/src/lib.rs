//! Tokenbill's domain crate, linked by every function and tool.
//!
//! - [`domain`]: pure rules (money, tokens, ledger postings, tariffs,
//!   invoices, promo codes, subscriptions). No I/O, no AWS types.
//! - [`store`]: the DynamoDB single-table adapter: every item's keys in one
//!   place, balance operations as single transactions, audits.
//! - [`resources`]: the table and queue definitions that `template.yaml`
//!   declares and local stacks create.
//! - [`aws`]: building SDK clients once per cold start.

pub mod aws;
pub mod clock;
pub mod domain;
pub mod payments;
pub mod queue;
pub mod renewal;
pub mod resources;
pub mod secrets;
pub mod store;
pub mod sweep;
pub mod telegram;
pub mod telemetry;
pub mod text;
pub mod timers;

pub use clock::{Clock, ManualClock, SystemClock};
pub use store::Store;
