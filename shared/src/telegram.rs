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
