//! `webhook set | info | delete`: points Telegram at the deployed bot.

use std::io::Write;

use clap::{Args, Subcommand};
use teloxide_core::Bot;
use teloxide_core::payloads::{DeleteWebhook, GetWebhookInfo, SetWebhook};
use teloxide_core::requests::{JsonRequest, Request};

use crate::AdminError;

#[derive(Debug, Subcommand)]
pub enum WebhookCommand {
    /// Register the webhook URL (the stack's `TelegramWebhookUrl` output)
    /// with the secret token and the update kinds the bot handles.
    Set {
        url: String,
        /// The webhook secret (prefer the environment variable; the
        /// function reads the same value from SSM).
        #[arg(long, env = "TELEGRAM_WEBHOOK_SECRET", hide_env_values = true)]
        secret: String,
        /// Forget updates that waited while no webhook was set.
        #[arg(long)]
        drop_pending: bool,
        #[command(flatten)]
        bot: BotArgs,
    },
    /// Show what Telegram has: URL, pending updates, the last error.
    Info {
        #[command(flatten)]
        bot: BotArgs,
    },
    /// Stop deliveries.
    Delete {
        #[arg(long)]
        drop_pending: bool,
        #[command(flatten)]
        bot: BotArgs,
    },
}

#[derive(Debug, Args)]
pub struct BotArgs {
    /// The bot's token (prefer the environment variable).
    #[arg(long, env = "TELEGRAM_BOT_TOKEN", hide_env_values = true)]
    pub bot_token: String,
    /// Another Bot API server (tests, a local Bot API server).
    #[arg(long, env = "TELEGRAM_API_URL")]
    pub telegram_api_url: Option<String>,
}

impl BotArgs {
    pub fn bot(&self) -> Result<Bot, AdminError> {
        let bot = Bot::new(self.bot_token.clone());
        match &self.telegram_api_url {
            Some(url) => Ok(bot.set_api_url(
                url.parse()
                    .map_err(|_| AdminError::Input(format!("{url:?} is not a URL")))?,
            )),
            None => Ok(bot),
        }
    }
}

fn refused(err: teloxide_core::RequestError) -> AdminError {
    AdminError::Input(format!("Telegram refused: {err}"))
}

pub async fn webhook(command: WebhookCommand, out: &mut impl Write) -> Result<(), AdminError> {
    match command {
        WebhookCommand::Set {
            url,
            secret,
            drop_pending,
            bot,
        } => {
            let parsed = url::Url::parse(&url).map_err(|_| AdminError::Input(format!("{url:?} is not a URL")))?;
            if parsed.scheme() != "https" {
                return Err(AdminError::Input(
                    "Telegram delivers webhooks only to https URLs".into(),
                ));
            }
            let mut payload = SetWebhook::new(parsed);
            payload.secret_token = Some(secret);
            payload.allowed_updates = Some(tokenbill::telegram::ALLOWED_UPDATES.to_vec());
            payload.drop_pending_updates = Some(drop_pending);
            JsonRequest::new(bot.bot()?, payload).send().await.map_err(refused)?;
            writeln!(out, "webhook set: {url}")?;
        }
        WebhookCommand::Info { bot } => {
            let info = JsonRequest::new(bot.bot()?, GetWebhookInfo::new())
                .send()
                .await
                .map_err(refused)?;
            let url = info.url.map_or_else(|| "(none)".to_owned(), |u| u.to_string());
            writeln!(out, "url      {url}")?;
            writeln!(out, "pending  {}", info.pending_update_count)?;
            if let Some(updates) = info.allowed_updates {
                let names: Vec<String> = updates
                    .iter()
                    .map(|u| serde_json::to_value(u).map(|v| v.as_str().unwrap_or_default().to_owned()))
                    .collect::<Result<_, _>>()
                    .map_err(|e| AdminError::Input(e.to_string()))?;
                writeln!(out, "updates  {}", names.join(", "))?;
            }
            if let (Some(at), Some(message)) = (info.last_error_date, info.last_error_message) {
                writeln!(out, "error    {at}: {message}")?;
            }
        }
        WebhookCommand::Delete { drop_pending, bot } => {
            let mut payload = DeleteWebhook::new();
            payload.drop_pending_updates = Some(drop_pending);
            JsonRequest::new(bot.bot()?, payload).send().await.map_err(refused)?;
            writeln!(out, "webhook deleted")?;
        }
    }
    Ok(())
}
