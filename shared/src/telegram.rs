//! The Telegram Bot API client, built once per cold start.

use teloxide_core::Bot;

/// The Bot API client for `token`; `TELEGRAM_API_URL` points it elsewhere
/// (the local runner's fake Telegram, tests).
pub fn bot(token: String) -> Result<Bot, String> {
    let bot = Bot::new(token);
    match std::env::var("TELEGRAM_API_URL") {
        Ok(url) => Ok(bot.set_api_url(
            url.parse()
                .map_err(|_| format!("TELEGRAM_API_URL {url:?} is not a URL"))?,
        )),
        Err(_) => Ok(bot),
    }
}

/// The update kinds the bot acts on, given to `setWebhook`: Telegram sends
/// nothing else (edited messages, channel posts... would only be ignored).
pub const ALLOWED_UPDATES: [teloxide_core::types::AllowedUpdate; 4] = [
    teloxide_core::types::AllowedUpdate::Message,
    teloxide_core::types::AllowedUpdate::CallbackQuery,
    teloxide_core::types::AllowedUpdate::PreCheckoutQuery,
    teloxide_core::types::AllowedUpdate::MyChatMember,
];
