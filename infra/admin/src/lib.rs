//! `tokenbill-admin`: what operators run against the local stack or AWS.
//! Endpoints and credentials come from the standard AWS variables; the
//! table from `--table` or `TOKENBILL_TABLE`.

mod keys;
pub mod payment_check;
mod payments;
mod webhook;

use std::io::Write;
use std::path::PathBuf;

use aws_config::SdkConfig;
use clap::{Args, Parser, Subcommand};
use rust_decimal::Decimal;
use tokenbill::domain::ledger::CreditKind;
use tokenbill::domain::promo::{PromoCode, PromoCodeText, PromoEffect};
use tokenbill::domain::tariff::Tariff;
use tokenbill::domain::{Currency, IdempotencyKey, Money, TariffId, Tokens, UserId};
use tokenbill::resources;
use tokenbill::store::{BalanceRequest, Store, StoreError};

#[derive(Debug, Parser)]
#[command(
    name = "tokenbill-admin",
    version,
    about = "Operate Tokenbill: table, tariffs, users, tokens, promo codes, service keys, payments"
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
    /// Manage promo codes.
    #[command(subcommand)]
    Promo(PromoCommand),
    /// Service keys for the spend API.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Point Telegram at the deployed bot.
    #[command(subcommand)]
    Webhook(webhook::WebhookCommand),
    /// Refund payments; check them with their providers.
    #[command(subcommand)]
    Payments(payments::PaymentsCommand),
}

#[derive(Debug, Subcommand)]
pub enum PromoCommand {
    /// Create one code.
    Create {
        code: String,
        #[command(flatten)]
        rules: PromoRules,
    },
    /// Create N single-use codes `PREFIX-XXXXXXXX` and print them as CSV.
    Batch {
        #[arg(long)]
        prefix: String,
        #[arg(long)]
        count: u32,
        /// Write the CSV here instead of standard output.
        #[arg(long)]
        output: Option<PathBuf>,
        #[command(flatten)]
        rules: PromoRules,
    },
    /// List every code with its use.
    List,
    /// Show one code in full.
    Show { code: String },
    /// Switch a code off (reserved uses stay valid).
    Disable { code: String },
}

/// What a code does and who may use it.
#[derive(Debug, Clone, Args)]
pub struct PromoRules {
    #[command(flatten)]
    pub effect: EffectArgs,
    /// Currency of --fixed and --min-amount.
    #[arg(long, default_value = "RUB")]
    pub currency: String,
    /// Total uses allowed (unlimited when absent).
    #[arg(long)]
    pub max: Option<u64>,
    /// Uses allowed per user.
    #[arg(long, default_value_t = 1)]
    pub per_user: u32,
    /// Valid from (RFC 3339, e.g. 2026-12-01T00:00:00Z).
    #[arg(long)]
    pub from: Option<chrono::DateTime<chrono::Utc>>,
    /// Valid until (RFC 3339), exclusive.
    #[arg(long)]
    pub until: Option<chrono::DateTime<chrono::Utc>>,
    /// Only for users who have never paid.
    #[arg(long)]
    pub first_purchase: bool,
    /// Comma-separated tariff ids the code applies to (all when absent).
    #[arg(long, value_delimiter = ',')]
    pub tariffs: Vec<TariffId>,
    /// Smallest price the code applies to, in --currency.
    #[arg(long)]
    pub min_amount: Option<rust_decimal::Decimal>,
}

/// What a code does: exactly one of these.
#[derive(Debug, Clone, Args)]
#[group(required = true, multiple = false)]
pub struct EffectArgs {
    /// Percent off the price (0 < P <= 100).
    #[arg(long)]
    pub percent: Option<rust_decimal::Decimal>,
    /// A fixed amount off the price, in --currency.
    #[arg(long)]
    pub fixed: Option<rust_decimal::Decimal>,
    /// Tokens granted when the code is activated.
    #[arg(long)]
    pub bonus_tokens: Option<u64>,
    /// Percent more tokens on a purchase.
    #[arg(long)]
    pub extra_tokens: Option<u32>,
}

impl PromoRules {
    /// The code these rules describe.
    pub fn build(&self, code: &str) -> Result<PromoCode, AdminError> {
        let currency: Currency = self.currency.parse()?;
        let e = &self.effect;
        let effect = match (e.percent, e.fixed, e.bonus_tokens, e.extra_tokens) {
            (Some(percent), None, None, None) if percent > Decimal::ZERO && percent <= Decimal::ONE_HUNDRED => {
                PromoEffect::PercentDiscount { percent }
            }
            (Some(_), ..) => return Err(AdminError::Input("--percent must be above 0 and at most 100".into())),
            (None, Some(amount), None, None) => PromoEffect::FixedDiscount {
                amount: Money::new(amount, currency)?,
            },
            (None, None, Some(tokens), None) => PromoEffect::BonusTokens {
                tokens: Tokens::positive(tokens)?,
            },
            (None, None, None, Some(percent)) if (1..=1000).contains(&percent) => PromoEffect::ExtraTokens { percent },
            (None, None, None, Some(_)) => return Err(AdminError::Input("--extra-tokens must be 1..=1000".into())),
            _ => return Err(AdminError::Input("give exactly one effect".into())),
        };
        if self.per_user == 0 {
            return Err(AdminError::Input("--per-user must be at least 1".into()));
        }
        if let (Some(from), Some(until)) = (self.from, self.until)
            && from >= until
        {
            return Err(AdminError::Input("--from must be before --until".into()));
        }
        Ok(PromoCode {
            valid_from: self.from,
            valid_until: self.until,
            max_redemptions: self.max,
            per_user_limit: self.per_user,
            first_purchase_only: self.first_purchase,
            allowed_tariffs: self.tariffs.clone(),
            min_amount: self.min_amount.map(|amount| Money::new(amount, currency)).transpose()?,
            ..PromoCode::new(PromoCodeText::new(code)?, effect)
        })
    }
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
        Command::Promo(command) => promo(&store, command, out).await?,
        Command::Keys(command) => keys::keys(&store, command, out).await?,
        Command::Webhook(command) => webhook::webhook(command, out).await?,
        Command::Payments(command) => payments::payments(&store, config, command, out).await?,
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

async fn promo(store: &Store, command: PromoCommand, out: &mut impl Write) -> Result<(), AdminError> {
    match command {
        PromoCommand::Create { code, rules } => {
            let promo = rules.build(&code)?;
            if !store.create_promo(&promo).await? {
                return Err(AdminError::Input(format!(
                    "promo code {} already exists",
                    promo.code.as_str()
                )));
            }
            writeln!(
                out,
                "created {}: {}",
                promo.code.as_str(),
                describe_effect(&promo.effect)
            )?;
        }
        PromoCommand::Batch {
            prefix,
            count,
            output,
            rules,
        } => {
            if !(1..=10_000).contains(&count) {
                return Err(AdminError::Input("--count must be 1..=10000".into()));
            }
            let single_use = PromoRules {
                max: Some(1),
                per_user: 1,
                ..rules
            };
            let mut csv = String::from("code,effect,valid_until\n");
            let mut made = 0;
            while made < count {
                let promo = single_use.build(&format!("{prefix}-{}", random_suffix()))?;
                // A clash with an existing code is skipped, never overwritten.
                if store.create_promo(&promo).await? {
                    let until = promo.valid_until.map(|u| u.to_rfc3339()).unwrap_or_default();
                    csv.push_str(&format!(
                        "{},{},{until}\n",
                        promo.code.as_str(),
                        describe_effect(&promo.effect)
                    ));
                    made += 1;
                }
            }
            match output {
                Some(path) => {
                    std::fs::write(&path, csv).map_err(|e| AdminError::Input(format!("{}: {e}", path.display())))?;
                    writeln!(out, "created {count} codes; CSV written to {}", path.display())?;
                }
                None => write!(out, "{csv}")?,
            }
        }
        PromoCommand::List => {
            for promo in store.promos().await? {
                let limit = promo
                    .max_redemptions
                    .map_or("unlimited".to_owned(), |max| max.to_string());
                writeln!(
                    out,
                    "{:<24} {:<8} used {:>5} / {:<9} paid {:>5}  {}",
                    promo.code.as_str(),
                    if promo.active { "active" } else { "disabled" },
                    promo.redemptions,
                    limit,
                    promo.paid_redemptions,
                    describe_effect(&promo.effect)
                )?;
            }
        }
        PromoCommand::Show { code } => {
            let code = PromoCodeText::new(&code)?;
            let promo = store
                .promo(&code)
                .await?
                .ok_or_else(|| AdminError::Input(format!("promo code {} not found", code.as_str())))?;
            writeln!(
                out,
                "{}",
                serde_json::to_string_pretty(&promo).map_err(|e| AdminError::Input(e.to_string()))?
            )?;
        }
        PromoCommand::Disable { code } => {
            let code = PromoCodeText::new(&code)?;
            store.set_promo_active(&code, false).await?;
            writeln!(out, "promo code {} disabled", code.as_str())?;
        }
    }
    Ok(())
}

fn describe_effect(effect: &PromoEffect) -> String {
    match effect {
        PromoEffect::PercentDiscount { percent } => format!("{percent}% off"),
        PromoEffect::FixedDiscount { amount } => format!("{amount} off"),
        PromoEffect::BonusTokens { tokens } => format!("{tokens} bonus tokens"),
        PromoEffect::ExtraTokens { percent } => format!("{percent}% more tokens"),
    }
}

/// Eight characters without look-alikes (no 0/O, 1/I).
fn random_suffix() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut rng = rand::rng();
    (0..8)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}
