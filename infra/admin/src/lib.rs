//! `tokenbill-admin`: what operators run against the local stack or AWS.
//! Endpoints and credentials come from the standard AWS variables; the
//! table from `--table` or `TOKENBILL_TABLE`.

use std::io::Write;
use std::path::PathBuf;

use aws_config::SdkConfig;
use clap::{Args, Parser, Subcommand};
use tokenbill::domain::ledger::CreditKind;
use tokenbill::domain::tariff::Tariff;
use tokenbill::domain::{IdempotencyKey, TariffId, Tokens, UserId};
use tokenbill::resources;
use tokenbill::store::{BalanceRequest, Store, StoreError};

#[derive(Debug, Parser)]
#[command(
    name = "tokenbill-admin",
    version,
    about = "Operate Tokenbill: table, tariffs, users, tokens"
)]
pub struct Cli {
    /// The DynamoDB table.
    #[arg(long, env = "TOKENBILL_TABLE", default_value = "tokenbill", global = true)]
    pub table: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the table.
    #[command(subcommand)]
    Table(TableCommand),
    /// Create the SQS queues (local stacks; on AWS the template creates them).
    #[command(subcommand)]
    Queues(QueuesCommand),
    /// Manage the tariff catalog.
    #[command(subcommand)]
    Tariffs(TariffsCommand),
    /// Look up users.
    #[command(subcommand)]
    User(UserCommand),
    /// Move tokens by hand (always with a ledger entry).
    #[command(subcommand)]
    Tokens(TokensCommand),
}

#[derive(Debug, Subcommand)]
pub enum TableCommand {
    /// Create the table with its indexes and TTL, if it does not exist.
    Create,
}

#[derive(Debug, Subcommand)]
pub enum QueuesCommand {
    /// Create the notification queue and its dead-letter queue.
    Create {
        /// Prepended to every queue name.
        #[arg(long, default_value = "")]
        prefix: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum TariffsCommand {
    /// Insert or replace the tariffs in a JSON file (a list of tariffs).
    /// Every tariff is validated before any is written.
    Seed { file: PathBuf },
    /// List the catalog, inactive tariffs included.
    List,
    /// Stop offering a tariff (existing invoices are unaffected).
    Disable { id: TariffId },
    /// Offer a disabled tariff again.
    Enable { id: TariffId },
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Profile, balance, last ledger entries and the audit result.
    Show {
        id: UserId,
        /// How many ledger entries to show.
        #[arg(long, default_value_t = 10)]
        entries: i32,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokensCommand {
    /// Grant tokens to a registered user.
    Grant(GrantArgs),
}

#[derive(Debug, Args)]
pub struct GrantArgs {
    pub id: UserId,
    pub tokens: u64,
    /// Why, recorded on the ledger entry.
    #[arg(long)]
    pub reason: String,
    /// Makes a repeated command a no-op; defaults to a fresh key.
    #[arg(long)]
    pub idempotency_key: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Input(String),
    #[error("could not write output: {0}")]
    Output(#[from] std::io::Error),
}

impl From<tokenbill::domain::DomainError> for AdminError {
    fn from(err: tokenbill::domain::DomainError) -> Self {
        AdminError::Store(err.into())
    }
}

pub async fn run(cli: Cli, config: &SdkConfig, out: &mut impl Write) -> Result<(), AdminError> {
    let store = Store::new(aws_sdk_dynamodb::Client::new(config), cli.table.as_str());
    match cli.command {
        Command::Table(TableCommand::Create) => {
            let created = resources::create_table(store.client(), store.table()).await?;
            writeln!(
                out,
                "table {}: {}",
                store.table(),
                if created { "created" } else { "already exists" }
            )?;
        }
        Command::Queues(QueuesCommand::Create { prefix }) => {
            for (logical_id, url) in resources::create_queues(&aws_sdk_sqs::Client::new(config), &prefix).await? {
                writeln!(out, "{logical_id}: {url}")?;
            }
        }
        Command::Tariffs(command) => tariffs(&store, command, out).await?,
        Command::User(UserCommand::Show { id, entries }) => show_user(&store, id, entries, out).await?,
        Command::Tokens(TokensCommand::Grant(args)) => grant(&store, args, out).await?,
    }
    Ok(())
}

async fn tariffs(store: &Store, command: TariffsCommand, out: &mut impl Write) -> Result<(), AdminError> {
    match command {
        TariffsCommand::Seed { file } => {
            let text =
                std::fs::read_to_string(&file).map_err(|e| AdminError::Input(format!("{}: {e}", file.display())))?;
            let tariffs = parse_tariffs(&text).map_err(|e| AdminError::Input(format!("{}: {e}", file.display())))?;
            store.put_tariffs(&tariffs).await?;
            writeln!(out, "seeded {} tariffs", tariffs.len())?;
        }
        TariffsCommand::List => {
            for tariff in store.tariffs().await? {
                let prices: Vec<String> = tariff.prices.iter().map(|(c, a)| format!("{a} {c}")).collect();
                writeln!(
                    out,
                    "{:<16} {:<8} {:>10} tokens  {:<24} {}",
                    tariff.id,
                    if tariff.active { "active" } else { "disabled" },
                    tariff.tokens,
                    prices.join(", "),
                    tariff.title.en
                )?;
            }
        }
        TariffsCommand::Disable { id } => {
            store.set_tariff_active(&id, false).await?;
            writeln!(out, "tariff {id} disabled")?;
        }
        TariffsCommand::Enable { id } => {
            store.set_tariff_active(&id, true).await?;
            writeln!(out, "tariff {id} enabled")?;
        }
    }
    Ok(())
}

/// Parses a catalog file; ids must be unique.
pub fn parse_tariffs(text: &str) -> Result<Vec<Tariff>, String> {
    let tariffs: Vec<Tariff> = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let mut seen = std::collections::HashSet::new();
    for tariff in &tariffs {
        if !seen.insert(&tariff.id) {
            return Err(format!("tariff {} appears twice", tariff.id));
        }
        tariff.validate().map_err(|e| e.to_string())?;
    }
    Ok(tariffs)
}

async fn show_user(store: &Store, id: UserId, entries: i32, out: &mut impl Write) -> Result<(), AdminError> {
    let user = store.existing_user(id).await?;
    let report = store.audit(id).await?;
    let page = store.ledger_page(id, None, entries).await?;
    writeln!(
        out,
        "user {}  @{}  {} {}",
        user.id,
        user.username.as_deref().unwrap_or("-"),
        user.first_name,
        user.last_name.as_deref().unwrap_or("")
    )?;
    writeln!(
        out,
        "language {:?}  first seen {}  reachable {}",
        user.language,
        user.first_seen.to_rfc3339(),
        user.reachable
    )?;
    writeln!(
        out,
        "balance  available {}  held {}",
        report.account.available, report.account.held
    )?;
    writeln!(out, "ledger   {} entries", report.entries)?;
    for entry in &page.entries {
        writeln!(
            out,
            "  {}  {:<10} {:>+8} available {:>+8} held  {}  {}",
            entry.tx_id,
            entry.kind.as_str(),
            entry.delta_available,
            entry.delta_held,
            entry.created_at.format("%Y-%m-%d %H:%M:%S"),
            entry.description.as_deref().unwrap_or("")
        )?;
    }
    if report.is_ok() {
        writeln!(out, "audit    ok: the ledger sums to the balance")?;
    } else {
        writeln!(out, "audit    FAILED")?;
        for problem in &report.problems {
            writeln!(out, "  - {problem}")?;
        }
    }
    Ok(())
}

async fn grant(store: &Store, args: GrantArgs, out: &mut impl Write) -> Result<(), AdminError> {
    if args.reason.trim().is_empty() {
        return Err(AdminError::Input("--reason must say why".into()));
    }
    store.existing_user(args.id).await?;
    let tokens = Tokens::positive(args.tokens)?;
    let key = IdempotencyKey::new(
        args.idempotency_key
            .unwrap_or_else(|| format!("admin-grant:{}", uuid::Uuid::new_v4())),
    )?;
    let applied = store
        .apply(BalanceRequest::credit(args.id, CreditKind::Grant, tokens, key).description(args.reason.trim()))
        .await?;
    let receipt = applied.receipt;
    let (balance, _) = store.balance(args.id).await?;
    writeln!(
        out,
        "{} {} tokens to user {} (transaction {}); available now {}",
        if applied.replayed { "already granted" } else { "granted" },
        receipt.amount,
        args.id,
        receipt.tx_id,
        balance.available
    )?;
    Ok(())
}
