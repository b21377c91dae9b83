//! Text as Telegram shows it (HTML parse mode), shared by the bot and the
//! notifier so both escape and format the same way.

use crate::domain::{Currency, Money};

/// Telegram's limit on a message's text.
pub const MAX_MESSAGE_CHARS: usize = 4096;

/// Escapes user-supplied text for HTML parse mode.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            // Control characters other than newlines and tabs are dropped.
            c if c.is_control() && c != '\n' && c != '\t' => {}
            c => out.push(c),
        }
    }
    out
}

/// Cuts a text to Telegram's limit, marking the cut.
pub fn fit(text: String) -> String {
    if text.chars().count() <= MAX_MESSAGE_CHARS {
        return text;
    }
    let mut cut: String = text.chars().take(MAX_MESSAGE_CHARS - 1).collect();
    cut.push('…');
    cut
}

/// Money as people read it: whole amounts without decimals (`99 ₽`,
/// `50 ⭐`), others with every minor digit (`79.20 ₽`, not `79.2 ₽`).
pub fn money(amount: &Money) -> String {
    let mut number = amount.amount().normalize();
    if number.scale() > 0 {
        number.rescale(amount.currency().minor_units());
    }
    match amount.currency() {
        Currency::Rub => format!("{number} ₽"),
        Currency::Xtr => format!("{number} ⭐"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_drops_control_characters() {
        assert_eq!(
            escape("<b>&\"x\"</b>\u{7}\n"),
            "&lt;b&gt;&amp;&quot;x&quot;&lt;/b&gt;\n"
        );
    }

    #[test]
    fn money_shows_whole_amounts_bare_and_others_to_the_minor_unit() {
        let rub = |text: &str| Money::new(text.parse().unwrap(), Currency::Rub).unwrap();
        assert_eq!(money(&rub("99.00")), "99 ₽");
        assert_eq!(money(&rub("79.2")), "79.20 ₽");
        assert_eq!(money(&rub("0.05")), "0.05 ₽");
        assert_eq!(money(&Money::new(50.into(), Currency::Xtr).unwrap()), "50 ⭐");
    }

    #[test]
    fn long_texts_are_cut_to_the_limit() {
        let cut = fit("я".repeat(MAX_MESSAGE_CHARS + 10));
        assert_eq!(cut.chars().count(), MAX_MESSAGE_CHARS);
        assert!(cut.ends_with('…'));
        assert_eq!(fit("short".into()), "short");
    }
}
