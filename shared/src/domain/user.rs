//! Users: who registered with the bot.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::UserId;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    #[default]
    Ru,
    En,
}

impl Language {
    /// Telegram sends IETF tags such as `ru`, `ru-RU`, `en-US`. English
    /// speakers get English; everyone else gets the default, Russian.
    pub fn from_telegram(code: Option<&str>) -> Self {
        match code.map(|c| c.split(['-', '_']).next().unwrap_or("").to_ascii_lowercase()) {
            Some(primary) if primary == "en" => Language::En,
            _ => Language::Ru,
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            Language::Ru => "ru",
            Language::En => "en",
        }
    }
}

/// What the bot expects the user's next text message to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Awaiting {
    PromoCode,
}

/// What Telegram tells us about a user when they talk to the bot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    pub id: UserId,
    pub username: Option<String>,
    pub first_name: String,
    pub last_name: Option<String>,
    pub language: Language,
    pub referrer: Option<UserId>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub id: UserId,
    #[serde(default)]
    pub username: Option<String>,
    pub first_name: String,
    #[serde(default)]
    pub last_name: Option<String>,
    pub language: Language,
    pub first_seen: DateTime<Utc>,
    /// Who invited this user; set once, at registration.
    #[serde(default)]
    pub referrer: Option<UserId>,
    /// False once the user blocked the bot; messages are not sent then.
    #[serde(default = "reachable_by_default")]
    pub reachable: bool,
    /// Paid invoices so far (first-purchase-only promo codes look at it).
    #[serde(default)]
    pub paid_invoices: u64,
    #[serde(default)]
    pub awaiting: Option<Awaiting>,
}

fn reachable_by_default() -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn language_follows_the_primary_tag() {
        assert_eq!(Language::from_telegram(Some("ru")), Language::Ru);
        assert_eq!(Language::from_telegram(Some("ru-RU")), Language::Ru);
        assert_eq!(Language::from_telegram(Some("RU")), Language::Ru);
        assert_eq!(Language::from_telegram(Some("en-US")), Language::En);
        assert_eq!(Language::from_telegram(Some("en")), Language::En);
        assert_eq!(
            Language::from_telegram(Some("uk")),
            Language::Ru,
            "others get the default"
        );
        assert_eq!(Language::from_telegram(None), Language::Ru);
    }
}
