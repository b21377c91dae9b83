//! The few HTML pages people see: the mock checkout, and "paid / declined,
//! back to the bot". Everything dynamic is escaped.

use tokenbill::domain::invoice::Invoice;
use tokenbill::text::{escape, money};

fn layout(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><title>{title}</title>\
         <style>body{{font-family:system-ui,sans-serif;max-width:28rem;margin:3rem auto;padding:0 1rem}}\
         .card{{border:1px solid #ddd;border-radius:12px;padding:1.5rem}}\
         button,.button{{font-size:1rem;padding:.6rem 1.2rem;border-radius:8px;border:0;cursor:pointer;margin-right:.5rem;text-decoration:none;display:inline-block}}\
         .pay{{background:#2a9d4b;color:#fff}}.decline{{background:#eee}}.amount{{font-size:1.6rem;font-weight:600}}</style>\
         </head><body><div class=\"card\">{body}</div></body></html>",
        title = escape(title)
    )
}

/// A short message with an optional link back to the bot.
pub fn message(title: &str, text: &str, back: Option<&str>) -> String {
    let link = back.map_or_else(String::new, |url| {
        format!(
            "<p><a class=\"button pay\" id=\"back\" href=\"{}\">Back to the bot</a></p>",
            escape(url)
        )
    });
    layout(
        title,
        &format!("<h1>{}</h1><p id=\"message\">{}</p>{link}", escape(title), escape(text)),
    )
}

/// The mock provider's checkout: what is bought, for how much, whether to
/// save the card for renewals (and how its renewals end: a test card),
/// Pay or Decline. A subscription's first payment saves it by default.
pub fn mock_checkout(invoice: &Invoice) -> String {
    let checked = if invoice.recurring { " checked" } else { "" };
    layout(
        "Mock checkout",
        &format!(
            "<h1>Mock checkout</h1><p>{title}</p><p class=\"amount\" id=\"amount\">{amount}</p>\
             <p>{tokens} tokens · invoice <code>{id}</code></p>\
             <form method=\"post\">\
             <p><label><input type=\"checkbox\" id=\"save_card\" name=\"save_card\" value=\"1\"{checked}> \
             Save the card for renewals</label><br><label>Renewals with this test card: \
             <select id=\"card\" name=\"card\"><option value=\"approve\">succeed</option>\
             <option value=\"decline\">are declined</option>\
             <option value=\"unavailable\">find the provider down</option></select></label></p>\
             <button class=\"pay\" id=\"pay\" name=\"action\" value=\"pay\">Pay</button>\
             <button class=\"decline\" id=\"decline\" name=\"action\" value=\"decline\">Decline</button></form>\
             <p><small>A stand-in for a real payment provider: no money moves.</small></p>",
            title = escape(&invoice.title.en),
            amount = escape(&money(&invoice.amount_due)),
            tokens = invoice.tokens.get() + invoice.bonus_tokens.get(),
            id = escape(invoice.id.as_str()),
        ),
    )
}
