//! `keys create | list | revoke`: service keys for the spend API.

use std::io::Write;

use clap::Subcommand;
use tokenbill::domain::service_key::{KeyId, RatePerSecond, Scope, ServiceKey};
use tokenbill::store::Store;

use crate::AdminError;

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key and print it once; only its SHA-256 is stored.
    Create {
        /// Who uses the key (shown in listings).
        #[arg(long)]
        name: String,
        /// Comma-separated: spend (spend, holds, refunds), read (balances,
        /// transactions).
        #[arg(long, default_value = "spend,read")]
        scopes: String,
        /// Requests per second the key may make, e.g. 100/s.
        #[arg(long, default_value = "50/s")]
        rate: String,
    },
    /// List keys (ids, names, scopes, rates; never the keys).
    List,
    /// Refuse a key from now on (warm API instances within their cache time).
    Revoke { id: KeyId },
}

pub async fn keys(store: &Store, command: KeysCommand, out: &mut impl Write) -> Result<(), AdminError> {
    match command {
        KeysCommand::Create { name, scopes, rate } => {
            let scopes = Scope::parse_list(&scopes)?;
            let rate: RatePerSecond = rate.parse()?;
            let (secret, record) = ServiceKey::create(&name, scopes, rate, store.now())?;
            store.create_service_key(&record).await?;
            writeln!(
                out,
                "key {} created for {:?} ({}, {})",
                record.id,
                record.name,
                scopes_text(&record),
                record.rate
            )?;
            writeln!(out, "{}", secret.reveal())?;
            writeln!(out, "Store it now: it is not shown again (only its hash is kept).")?;
        }
        KeysCommand::List => {
            for key in store.service_keys().await? {
                let state = match key.revoked_at {
                    Some(at) => format!("revoked {}", at.format("%Y-%m-%d %H:%M")),
                    None => "active".to_owned(),
                };
                writeln!(
                    out,
                    "{}  {:<24} {:<12} {:>9}  {}  created {}",
                    key.id,
                    key.name,
                    scopes_text(&key),
                    key.rate.to_string(),
                    state,
                    key.created_at.format("%Y-%m-%d")
                )?;
            }
        }
        KeysCommand::Revoke { id } => {
            let key = store.revoke_service_key(&id).await?;
            writeln!(out, "key {} ({:?}) revoked", key.id, key.name)?;
        }
    }
    Ok(())
}

fn scopes_text(key: &ServiceKey) -> String {
    key.scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(",")
}
