//! Pure business rules. Nothing here performs I/O or knows about AWS.

pub mod error;
pub mod ids;
pub mod invoice;
pub mod ledger;
pub mod money;
pub mod notification;
pub mod pricing;
pub mod promo;
pub mod service_key;
pub mod subscription;
pub mod tariff;
pub mod tokens;
pub mod user;

pub use error::DomainError;
pub use ids::{IdempotencyKey, InvoiceId, TariffId, TxId, UserId};
pub use ledger::{Balance, EntryKind, Movement, Posting};
pub use money::{Currency, Money};
pub use tokens::Tokens;
