//! `payments refund`: gives a paid invoice's money back and takes its
//! tokens back with a ledger entry. `payments check`: see
//! [`crate::payment_check`].

use std::io::Write;

use clap::Subcommand;
use teloxide_core::payloads::RefundStarPayment;
use teloxide_core::requests::{JsonRequest, Request};
use teloxide_core::types::{TelegramTransactionId, UserId as TelegramUserId};
use tokenbill::domain::InvoiceId;
use tokenbill::domain::invoice::{Invoice, InvoiceStatus, Provider};
use tokenbill::store::Store;

use crate::AdminError;

#[derive(Debug, Subcommand)]
pub enum PaymentsCommand {
    /// Refund a paid invoice. Telegram Stars are returned through the Bot
    /// API; for other providers return the money in their dashboard first
    /// and pass --external.
    Refund {
        invoice: String,
        /// The money was already returned (in the provider's dashboard, or
        /// by an earlier run whose reversal failed): only record it.
        #[arg(long)]
        external: bool,
        /// The bot's token (prefer the environment variable).
        #[arg(long, env = "TELEGRAM_BOT_TOKEN", hide_env_values = true)]
        bot_token: Option<String>,
        /// Another Bot API server (tests, a local Bot API server).
        #[arg(long, env = "TELEGRAM_API_URL")]
        telegram_api_url: Option<String>,
    },
    /// Compare an invoice with the provider's record (Robokassa: OpStateExt,
    /// configured by ROBOKASSA_LOGIN / ROBOKASSA_PASSWORD1 / ROBOKASSA_PASSWORD2).
    Check {
        invoice: String,
        /// Credit the invoice when Robokassa reports it paid and it is not
        /// (a ResultURL that never arrived).
        #[arg(long)]
        credit: bool,
    },
}

pub async fn payments(
    store: &Store,
    config: &aws_config::SdkConfig,
    command: PaymentsCommand,
    out: &mut impl Write,
) -> Result<(), AdminError> {
    match command {
        PaymentsCommand::Check { invoice, credit } => {
            let robokassa = crate::payment_check::robokassa_from_env(config).await?;
            let http = reqwest::Client::new();
            crate::payment_check::check(store, robokassa.as_ref(), &http, &invoice, credit, out).await?;
        }
        PaymentsCommand::Refund {
            invoice,
            external,
            bot_token,
            telegram_api_url,
        } => {
            let id = InvoiceId::new(&invoice)?;
            let invoice = store
                .invoice(&id)
                .await?
                .ok_or_else(|| AdminError::Input(format!("no invoice {id}")))?;
            if invoice.status == InvoiceStatus::Paid {
                let tokens = invoice.tokens.checked_add(invoice.bonus_tokens)?;
                let (balance, _) = store.balance(invoice.user).await?;
                if balance.available < tokens {
                    return Err(AdminError::Input(format!(
                        "user {} has {} tokens available and the refund takes back {tokens}: nothing done",
                        invoice.user, balance.available
                    )));
                }
                return_money(&invoice, external, bot_token, telegram_api_url).await?;
            } else if invoice.status != InvoiceStatus::Refunded {
                return Err(AdminError::Input(format!(
                    "invoice {id} is {}: only paid invoices are refunded",
                    invoice.status
                )));
            }
            let refund = store.refund_invoice(&id).await.map_err(|err| {
                if invoice.status == InvoiceStatus::Paid {
                    // The money is back with the user; the tokens are not.
                    AdminError::Input(format!(
                        "the money went back but the tokens could not be taken back ({err}); \
                         when the user has them again, run this again with --external"
                    ))
                } else {
                    err.into()
                }
            })?;
            let (balance, _) = store.balance(invoice.user).await?;
            writeln!(
                out,
                "invoice {id} refunded{}: {} tokens taken back, user {} now has {}",
                if refund.replayed { " (already)" } else { "" },
                refund.receipt.amount,
                invoice.user,
                balance.available
            )?;
        }
    }
    Ok(())
}

/// Returns the money through the provider, or checks the operator did.
async fn return_money(
    invoice: &Invoice,
    external: bool,
    bot_token: Option<String>,
    api_url: Option<String>,
) -> Result<(), AdminError> {
    if external {
        return Ok(());
    }
    if invoice.provider != Provider::TelegramStars {
        return Err(AdminError::Input(format!(
            "{} payments are refunded in the provider's dashboard: do that, then run again with --external",
            invoice.provider.as_str()
        )));
    }
    let charge = invoice
        .provider_ref
        .clone()
        .ok_or_else(|| AdminError::Input(format!("invoice {} has no Telegram charge id", invoice.id)))?;
    let token = bot_token.ok_or_else(|| AdminError::Input("TELEGRAM_BOT_TOKEN is needed to refund Stars".into()))?;
    let mut bot = teloxide_core::Bot::new(token);
    if let Some(url) = api_url {
        bot = bot.set_api_url(
            url.parse()
                .map_err(|_| AdminError::Input(format!("{url:?} is not a URL")))?,
        );
    }
    let user = u64::try_from(invoice.user.get())
        .map(TelegramUserId)
        .map_err(|_| AdminError::Input(format!("user {} is not a Telegram user", invoice.user)))?;
    let payload = RefundStarPayment::new(user, TelegramTransactionId(charge));
    match JsonRequest::new(bot, payload).send().await {
        Ok(_) => Ok(()),
        // A refund that went through before the reversal was recorded.
        Err(err) if err.to_string().contains("CHARGE_ALREADY_REFUNDED") => Ok(()),
        Err(err) => Err(AdminError::Input(format!(
            "Telegram refused the refund: {err}: nothing recorded"
        ))),
    }
}
