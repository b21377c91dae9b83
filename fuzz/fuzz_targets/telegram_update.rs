//! Telegram updates as the webhook reads them before any I/O: the body is
//! parsed and triaged (claim mode, user, what to read), commands, button
//! payloads, promo codes and Stars payloads inside it are decoded, and the
//! user's text is escaped and cut for HTML replies. Nothing panics; a
//! planned update always names a valid user.

#![no_main]

use libfuzzer_sys::fuzz_target;
use telegram_webhook::{BotConfig, Callback, Triage, triage};
use teloxide_core::types::UpdateKind;
use tokenbill::domain::promo::PromoCodeText;
use tokenbill::payments::stars;
use tokenbill::text;

fn config() -> BotConfig {
    BotConfig::from_lookup(|name| match name {
        "TELEGRAM_WEBHOOK_SECRET" => Some("fuzz-secret".to_owned()),
        "TELEGRAM_BOT_USERNAME" => Some("tokenbill_bot".to_owned()),
        _ => None,
    })
    .expect("a valid configuration")
}

/// What a bot reply does with user text: escaped, then cut to Telegram's limit.
fn check_text(raw: &str) {
    let escaped = text::escape(raw);
    assert!(!escaped.contains('<') && !escaped.contains('>'));
    assert!(!escaped.chars().any(|c| c.is_control() && c != '\n' && c != '\t'));
    let fitted = text::fit(escaped);
    assert!(fitted.chars().count() <= text::MAX_MESSAGE_CHARS);
}

fn check_callback(data: &str) {
    if let Some(callback) = Callback::decode(data) {
        // What decodes is what our own buttons encode.
        assert_eq!(Callback::decode(&callback.encode()), Some(callback));
    }
}

fuzz_target!(|data: &[u8]| {
    let config = config();
    if let Ok(raw) = std::str::from_utf8(data) {
        // The same bytes as a message's text or a button's payload.
        check_callback(raw);
        check_text(raw);
        let _ = PromoCodeText::new(raw.trim());
        let _ = stars::invoice_id(raw);
    }
    match triage(&config, data) {
        Triage::Handle(update, plan) => {
            assert!(plan.user.get() > 0);
            match &update.kind {
                UpdateKind::Message(message) => {
                    if let Some(text) = message.text() {
                        check_text(text);
                    }
                    if let Some(payment) = message.successful_payment() {
                        let _ = stars::proof(payment);
                        let _ = stars::is_renewal(payment);
                    }
                }
                UpdateKind::CallbackQuery(query) => {
                    if let Some(data) = &query.data {
                        check_callback(data);
                    }
                }
                _ => {}
            }
        }
        Triage::Malformed(err) => {
            let _ = err.to_string();
        }
        Triage::Unsupported { .. } | Triage::Nothing => {}
    }
});
