//! Every text the bot shows, in Russian and English. Dynamic parts are
//! HTML-escaped by the caller ([`escape`]); messages use HTML parse mode.

use tokenbill::domain::promo::PromoRejection;
use tokenbill::domain::user::Language;

/// Telegram's limit on a message's text.
pub const MAX_MESSAGE_CHARS: usize = 4096;

/// Escapes text for Telegram's HTML parse mode.
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

/// Cuts a message to Telegram's limit, on a character boundary.
pub fn fit(text: String) -> String {
    if text.chars().count() <= MAX_MESSAGE_CHARS {
        return text;
    }
    let mut cut: String = text.chars().take(MAX_MESSAGE_CHARS - 1).collect();
    cut.push('…');
    cut
}

pub struct Texts {
    pub welcome: &'static str,
    pub menu_buy: &'static str,
    pub menu_balance: &'static str,
    pub menu_promo: &'static str,
    pub menu_subscription: &'static str,
    pub menu_history: &'static str,
    pub menu_language: &'static str,
    pub menu_help: &'static str,
    pub back: &'static str,
    pub to_menu: &'static str,
    pub balance_title: &'static str,
    pub available: &'static str,
    pub held: &'static str,
    pub no_subscription: &'static str,
    pub subscription_active_until: &'static str,
    pub subscription_renews: &'static str,
    pub subscription_ends: &'static str,
    pub subscription_past_due: &'static str,
    pub subscription_expired: &'static str,
    pub auto_renew_off_button: &'static str,
    pub auto_renew_on_button: &'static str,
    pub confirm_auto_renew_off: &'static str,
    pub confirm_auto_renew_on: &'static str,
    pub yes: &'static str,
    pub no: &'static str,
    pub auto_renew_now_off: &'static str,
    pub auto_renew_now_on: &'static str,
    pub buy_title: &'static str,
    pub no_tariffs: &'static str,
    pub tokens_word: &'static str,
    pub per_days: &'static str,
    pub price: &'static str,
    pub discount: &'static str,
    pub total: &'static str,
    pub promo_applied: &'static str,
    pub pay_card: &'static str,
    pub pay_robokassa: &'static str,
    pub pay_stars: &'static str,
    pub tariff_gone: &'static str,
    pub invoice_created: &'static str,
    pub invoice_expires: &'static str,
    pub open_payment: &'static str,
    pub provider_unavailable: &'static str,
    pub free_purchase_done: &'static str,
    pub promo_prompt: &'static str,
    pub promo_saved: &'static str,
    pub promo_bonus: &'static str,
    pub promo_needs_code: &'static str,
    pub history_title: &'static str,
    pub history_empty: &'static str,
    pub older: &'static str,
    pub newest: &'static str,
    pub language_prompt: &'static str,
    pub language_set: &'static str,
    pub help: &'static str,
    pub paysupport: &'static str,
    pub unknown_text: &'static str,
    pub stale_button: &'static str,
    pub something_wrong: &'static str,
    pub referral_thanks: &'static str,
}

pub fn texts(language: Language) -> &'static Texts {
    match language {
        Language::Ru => &RU,
        Language::En => &EN,
    }
}

pub fn promo_rejection(language: Language, rejection: PromoRejection) -> &'static str {
    use PromoRejection::*;
    match (language, rejection) {
        (Language::Ru, NotFound) => "Такого промокода нет.",
        (Language::Ru, Inactive) => "Этот промокод отключён.",
        (Language::Ru, NotYetValid) => "Этот промокод ещё не действует.",
        (Language::Ru, Expired) => "Срок действия промокода истёк.",
        (Language::Ru, Exhausted) => "Промокод уже использован максимальное число раз.",
        (Language::Ru, AlreadyUsed) => "Вы уже использовали этот промокод.",
        (Language::Ru, FirstPurchaseOnly) => "Этот промокод только для первой покупки.",
        (Language::Ru, TariffNotAllowed) => "Этот промокод не действует для выбранного тарифа.",
        (Language::Ru, BelowMinimum) => "Сумма покупки меньше минимальной для этого промокода.",
        (Language::En, NotFound) => "There is no such promo code.",
        (Language::En, Inactive) => "This promo code has been switched off.",
        (Language::En, NotYetValid) => "This promo code is not valid yet.",
        (Language::En, Expired) => "This promo code has expired.",
        (Language::En, Exhausted) => "This promo code has been used up.",
        (Language::En, AlreadyUsed) => "You have already used this promo code.",
        (Language::En, FirstPurchaseOnly) => "This promo code is only for a first purchase.",
        (Language::En, TariffNotAllowed) => "This promo code does not apply to the chosen tariff.",
        (Language::En, BelowMinimum) => "The purchase is below this promo code's minimum amount.",
    }
}

static RU: Texts = Texts {
    welcome: "Здравствуйте, {name}! Здесь можно купить токены и оформить подписку.",
    menu_buy: "🛒 Купить токены",
    menu_balance: "💰 Баланс",
    menu_promo: "🎁 Ввести промокод",
    menu_subscription: "🔁 Подписка",
    menu_history: "📜 История",
    menu_language: "🌐 Язык",
    menu_help: "❓ Помощь",
    back: "« Назад",
    to_menu: "« Меню",
    balance_title: "<b>Баланс</b>",
    available: "Доступно",
    held: "Зарезервировано",
    no_subscription: "Подписки нет.",
    subscription_active_until: "Подписка «{title}» действует до {date}.",
    subscription_renews: "Продлится автоматически.",
    subscription_ends: "Автопродление выключено.",
    subscription_past_due: "Не удалось списать оплату за продление, пробуем снова.",
    subscription_expired: "Подписка «{title}» закончилась {date}.",
    auto_renew_off_button: "Выключить автопродление",
    auto_renew_on_button: "Включить автопродление",
    confirm_auto_renew_off: "Выключить автопродление? Подписка закончится в конце оплаченного периода.",
    confirm_auto_renew_on: "Включить автопродление? Следующий период оплатится автоматически.",
    yes: "Да",
    no: "Нет",
    auto_renew_now_off: "Автопродление выключено.",
    auto_renew_now_on: "Автопродление включено.",
    buy_title: "<b>Тарифы</b>\nВыберите пакет или подписку:",
    no_tariffs: "Сейчас нечего купить. Загляните позже.",
    tokens_word: "токенов",
    per_days: "каждые {days} дн.",
    price: "Цена",
    discount: "Скидка",
    total: "К оплате",
    promo_applied: "Промокод {code}",
    pay_card: "Оплатить картой: {amount}",
    pay_robokassa: "Robokassa: {amount}",
    pay_stars: "Telegram Stars: {amount}",
    tariff_gone: "Этот тариф больше не продаётся.",
    invoice_created: "Счёт на {amount} создан: {title}.",
    invoice_expires: "Оплатите до {time} UTC.",
    open_payment: "Перейти к оплате",
    provider_unavailable: "Этот способ оплаты сейчас недоступен.",
    free_purchase_done: "Готово! {tokens} токенов зачислено бесплатно по промокоду.",
    promo_prompt: "Отправьте промокод следующим сообщением.",
    promo_saved: "Промокод {code} принят и будет применён к следующей покупке.",
    promo_bonus: "Промокод {code} активирован: +{tokens} токенов.",
    promo_needs_code: "Напишите промокод после команды, например: /promo WELCOME",
    history_title: "<b>История операций</b>",
    history_empty: "Операций пока нет.",
    older: "Раньше »",
    newest: "« Последние",
    language_prompt: "Выберите язык:",
    language_set: "Язык: русский.",
    help: "/start — меню\n/balance — баланс\n/buy — купить токены\n/promo КОД — промокод\n/subscription — подписка\n/history — история\n/language — язык\n/paysupport — помощь с оплатой",
    paysupport: "Вопросы об оплате и возвратах: {contact}",
    unknown_text: "Не понимаю. Откройте меню: /start или помощь: /help",
    stale_button: "Эта кнопка устарела. Откройте меню заново: /start",
    something_wrong: "Что-то пошло не так. Попробуйте ещё раз.",
    referral_thanks: "Спасибо, что пришли по приглашению!",
};

static EN: Texts = Texts {
    welcome: "Hello, {name}! Here you can buy tokens and subscribe.",
    menu_buy: "🛒 Buy tokens",
    menu_balance: "💰 Balance",
    menu_promo: "🎁 Enter promo code",
    menu_subscription: "🔁 Subscription",
    menu_history: "📜 History",
    menu_language: "🌐 Language",
    menu_help: "❓ Help",
    back: "« Back",
    to_menu: "« Menu",
    balance_title: "<b>Balance</b>",
    available: "Available",
    held: "Held",
    no_subscription: "No subscription.",
    subscription_active_until: "Subscription “{title}” runs until {date}.",
    subscription_renews: "It renews automatically.",
    subscription_ends: "Auto-renewal is off.",
    subscription_past_due: "The renewal payment failed; we will try again.",
    subscription_expired: "Subscription “{title}” ended on {date}.",
    auto_renew_off_button: "Turn auto-renewal off",
    auto_renew_on_button: "Turn auto-renewal on",
    confirm_auto_renew_off: "Turn auto-renewal off? The subscription ends with the paid period.",
    confirm_auto_renew_on: "Turn auto-renewal on? The next period will be paid automatically.",
    yes: "Yes",
    no: "No",
    auto_renew_now_off: "Auto-renewal is off.",
    auto_renew_now_on: "Auto-renewal is on.",
    buy_title: "<b>Tariffs</b>\nChoose a pack or a subscription:",
    no_tariffs: "Nothing is on sale right now. Please come back later.",
    tokens_word: "tokens",
    per_days: "every {days} days",
    price: "Price",
    discount: "Discount",
    total: "Total",
    promo_applied: "Promo code {code}",
    pay_card: "Pay by card: {amount}",
    pay_robokassa: "Robokassa: {amount}",
    pay_stars: "Telegram Stars: {amount}",
    tariff_gone: "This tariff is no longer on sale.",
    invoice_created: "An invoice for {amount} was created: {title}.",
    invoice_expires: "Please pay before {time} UTC.",
    open_payment: "Go to payment",
    provider_unavailable: "This payment method is not available right now.",
    free_purchase_done: "Done! {tokens} tokens were credited free with your promo code.",
    promo_prompt: "Send the promo code as your next message.",
    promo_saved: "Promo code {code} accepted; it applies to your next purchase.",
    promo_bonus: "Promo code {code} activated: +{tokens} tokens.",
    promo_needs_code: "Put the code after the command, for example: /promo WELCOME",
    history_title: "<b>History</b>",
    history_empty: "No transactions yet.",
    older: "Older »",
    newest: "« Newest",
    language_prompt: "Choose a language:",
    language_set: "Language: English.",
    help: "/start — menu\n/balance — balance\n/buy — buy tokens\n/promo CODE — promo code\n/subscription — subscription\n/history — history\n/language — language\n/paysupport — payment help",
    paysupport: "Questions about payments and refunds: {contact}",
    unknown_text: "I did not understand that. Open the menu: /start or help: /help",
    stale_button: "This button is out of date. Open the menu again: /start",
    something_wrong: "Something went wrong. Please try again.",
    referral_thanks: "Thank you for coming by invitation!",
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_keeps_markup_out() {
        assert_eq!(
            escape("<b>Tom & \"Jerry\"</b>"),
            "&lt;b&gt;Tom &amp; &quot;Jerry&quot;&lt;/b&gt;"
        );
        assert_eq!(escape("a\u{0}b\u{7}c\nd"), "abc\nd");
        assert_eq!(escape("Привет 👋"), "Привет 👋");
    }

    #[test]
    fn long_texts_are_cut_to_the_limit() {
        let long = "я".repeat(5000);
        let cut = fit(long);
        assert_eq!(cut.chars().count(), MAX_MESSAGE_CHARS);
        assert_eq!(fit("short".into()), "short");
    }
}
