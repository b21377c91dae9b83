//! Inline-button payloads: compact `x:arg` strings, at most 64 bytes
//! (Telegram's limit). Anything that does not decode is a stale or forged
//! button and gets a friendly answer.

use tokenbill::domain::TariffId;
use tokenbill::domain::invoice::Provider;
use tokenbill::domain::user::Language;

/// Telegram's limit on `callback_data`.
pub const MAX_CALLBACK_BYTES: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Callback {
    Menu,
    Balance,
    Buy,
    Tariff(TariffId),
    Pay(TariffId, Provider),
    PromoPrompt,
    /// History page; `None` is the newest page, else entries older than the
    /// given entry id (its 32 hex digits).
    History(Option<String>),
    Subscription,
    /// Asks to confirm turning auto-renewal on (`true`) or off.
    AutoRenewAsk(bool),
    AutoRenewSet(bool),
    LanguageMenu,
    Language(Language),
    Help,
}

impl Callback {
    pub fn encode(&self) -> String {
        let data = match self {
            Callback::Menu => "m".to_owned(),
            Callback::Balance => "bal".to_owned(),
            Callback::Buy => "buy".to_owned(),
            Callback::Tariff(id) => format!("t:{id}"),
            Callback::Pay(id, provider) => format!("p:{}:{id}", provider_code(*provider)),
            Callback::PromoPrompt => "promo".to_owned(),
            Callback::History(None) => "h".to_owned(),
            Callback::History(Some(cursor)) => format!("h:{cursor}"),
            Callback::Subscription => "sub".to_owned(),
            Callback::AutoRenewAsk(on) => format!("ra:{}", u8::from(*on)),
            Callback::AutoRenewSet(on) => format!("rs:{}", u8::from(*on)),
            Callback::LanguageMenu => "lang".to_owned(),
            Callback::Language(language) => format!("l:{}", language.code()),
            Callback::Help => "help".to_owned(),
        };
        debug_assert!(data.len() <= MAX_CALLBACK_BYTES, "{data} is too long");
        data
    }

    pub fn decode(data: &str) -> Option<Callback> {
        if data.len() > MAX_CALLBACK_BYTES {
            return None;
        }
        let (head, arg) = match data.split_once(':') {
            Some((head, arg)) => (head, Some(arg)),
            None => (data, None),
        };
        Some(match (head, arg) {
            ("m", None) => Callback::Menu,
            ("bal", None) => Callback::Balance,
            ("buy", None) => Callback::Buy,
            ("t", Some(id)) => Callback::Tariff(TariffId::new(id).ok()?),
            ("p", Some(rest)) => {
                let (provider, id) = rest.split_once(':')?;
                Callback::Pay(TariffId::new(id).ok()?, provider_from_code(provider)?)
            }
            ("promo", None) => Callback::PromoPrompt,
            ("h", None) => Callback::History(None),
            ("h", Some(cursor)) if cursor.len() == 32 && cursor.bytes().all(|b| b.is_ascii_hexdigit()) => {
                Callback::History(Some(cursor.to_owned()))
            }
            ("sub", None) => Callback::Subscription,
            ("ra", Some("0")) => Callback::AutoRenewAsk(false),
            ("ra", Some("1")) => Callback::AutoRenewAsk(true),
            ("rs", Some("0")) => Callback::AutoRenewSet(false),
            ("rs", Some("1")) => Callback::AutoRenewSet(true),
            ("lang", None) => Callback::LanguageMenu,
            ("l", Some("ru")) => Callback::Language(Language::Ru),
            ("l", Some("en")) => Callback::Language(Language::En),
            ("help", None) => Callback::Help,
            _ => return None,
        })
    }
}

fn provider_code(provider: Provider) -> &'static str {
    match provider {
        Provider::Mock => "mk",
        Provider::Robokassa => "rk",
        Provider::TelegramStars => "st",
        Provider::Free => "fr",
    }
}

fn provider_from_code(code: &str) -> Option<Provider> {
    Some(match code {
        "mk" => Provider::Mock,
        "rk" => Provider::Robokassa,
        "st" => Provider::TelegramStars,
        "fr" => Provider::Free,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_callback_round_trips_within_64_bytes() {
        let longest_tariff = TariffId::new("x".repeat(40)).unwrap();
        let all = [
            Callback::Menu,
            Callback::Balance,
            Callback::Buy,
            Callback::Tariff(longest_tariff.clone()),
            Callback::Pay(longest_tariff, Provider::TelegramStars),
            Callback::PromoPrompt,
            Callback::History(None),
            Callback::History(Some("0123456789abcdef0123456789abcdef".into())),
            Callback::Subscription,
            Callback::AutoRenewAsk(true),
            Callback::AutoRenewSet(false),
            Callback::LanguageMenu,
            Callback::Language(Language::En),
            Callback::Help,
        ];
        for callback in all {
            let data = callback.encode();
            assert!(data.len() <= MAX_CALLBACK_BYTES, "{data}");
            assert_eq!(Callback::decode(&data), Some(callback));
        }
    }

    #[test]
    fn junk_is_refused() {
        for junk in [
            "",
            "x",
            "t:",
            "t:bad id",
            "p:zz:pack",
            "h:xyz",
            "ra:2",
            "l:de",
            &"m".repeat(65),
            "m:extra",
        ] {
            assert_eq!(Callback::decode(junk), None, "{junk:?}");
        }
    }
}
