//! Payment providers: how money arrives. Each adapter verifies its
//! provider's proof of payment and turns it into a [`crate::store::PaymentProof`];
//! crediting it is the store's one billing transaction for all of them.
//!
//! - [`mock`]: the stand-in provider of development and tests;
//! - [`robokassa`]: Robokassa's payment page, ResultURL and recurring charges;
//! - [`stars`]: Telegram Stars invoices, paid inside Telegram.

pub mod mock;
pub mod robokassa;
pub mod stars;
