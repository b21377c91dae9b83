//! Telegram updates shaped as the Bot API delivers them to the webhook.

use serde_json::{Value, json};

pub fn from(id: i64, language: &str) -> Value {
    json!({ "id": id, "is_bot": false, "first_name": "Ann <&>", "username": "ann", "language_code": language })
}

pub fn chat(id: i64) -> Value {
    json!({ "id": id, "type": "private", "first_name": "Ann" })
}

pub fn message(update_id: u32, user: i64, text: &str) -> Value {
    json!({ "update_id": update_id, "message": {
        "message_id": update_id, "date": 1_764_000_000, "chat": chat(user), "from": from(user, "en"), "text": text
    }})
}

pub fn callback(update_id: u32, user: i64, data: &str) -> Value {
    json!({ "update_id": update_id, "callback_query": {
        "id": format!("cb{update_id}"), "from": from(user, "en"), "chat_instance": "1", "data": data,
        "message": { "message_id": 77, "date": 1_764_000_000, "chat": chat(user),
                     "from": { "id": 1, "is_bot": true, "first_name": "Tokenbill" }, "text": "menu" }
    }})
}

pub fn pre_checkout(update_id: u32, user: i64, payload: &str, currency: &str, amount: u32) -> Value {
    json!({ "update_id": update_id, "pre_checkout_query": {
        "id": format!("pcq{update_id}"), "from": from(user, "en"), "currency": currency,
        "total_amount": amount, "invoice_payload": payload
    }})
}

pub fn successful_payment(update_id: u32, user: i64, payload: &str, amount: u32, charge: &str) -> Value {
    json!({ "update_id": update_id, "message": {
        "message_id": update_id, "date": 1_764_000_000, "chat": chat(user), "from": from(user, "en"),
        "successful_payment": {
            "currency": "XTR", "total_amount": amount, "invoice_payload": payload,
            "telegram_payment_charge_id": charge, "provider_payment_charge_id": ""
        }
    }})
}
