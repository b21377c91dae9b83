//! Telegram update handling, in process: `Webhook::handle` (the function's
//! handler, as `lambda_http` calls it) fed real Update JSON with the secret
//! header, against DynamoDB Local, Bot API calls going to the fake
//! Telegram. One update at a time, as Telegram delivers a chat's updates.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use serde_json::{Value, json};

use crate::app::{BoxError, Local};
use crate::measure::{Measured, phase};

/// Users who send /start for the first time are numbered from here.
const NEW_USERS: i64 = 500_000;
/// The users who click buttons (registered by the warm-up's /start).
const CLICKERS: i64 = 600_000;

fn from(id: i64) -> Value {
    json!({ "id": id, "is_bot": false, "first_name": "Ann", "username": "ann", "language_code": "en" })
}

fn chat(id: i64) -> Value {
    json!({ "id": id, "type": "private", "first_name": "Ann" })
}

fn message(update_id: u32, user: i64, text: &str) -> Value {
    json!({ "update_id": update_id, "message": {
        "message_id": update_id, "date": 1_764_000_000, "chat": chat(user), "from": from(user), "text": text
    }})
}

fn click(update_id: u32, user: i64, data: &str) -> Value {
    json!({ "update_id": update_id, "callback_query": {
        "id": format!("cb{update_id}"), "from": from(user), "chat_instance": "1", "data": data,
        "message": { "message_id": 77, "date": 1_764_000_000, "chat": chat(user),
                     "from": { "id": 1, "is_bot": true, "first_name": "Tokenbill" }, "text": "menu" }
    }})
}

/// Makes the update with id `update_id` for a kind's `i`th run.
type MakeUpdate = fn(u32, i64) -> Value;

/// The update kinds measured: what each is, and its updates.
fn kinds() -> Vec<(&'static str, MakeUpdate)> {
    vec![
        ("/start, new user (registers)", |id, i| {
            message(id, NEW_USERS + i, "/start")
        }),
        ("/start, known user", |id, i| message(id, CLICKERS + i % 16, "/start")),
        ("button: balance", |id, i| click(id, CLICKERS + i % 16, "bal")),
        ("button: buy (catalog)", |id, i| click(id, CLICKERS + i % 16, "buy")),
        ("button: tariff pack_100", |id, i| {
            click(id, CLICKERS + i % 16, "t:pack_100")
        }),
    ]
}

pub async fn bench(local: &Local, updates: usize) -> Result<(), BoxError> {
    println!();
    println!(
        "Telegram updates handled in process (Webhook::handle with real Update JSON, DynamoDB Local, fake Bot API), {updates} per kind, one at a time"
    );
    println!(
        "{:<32} {:>9} {:>9} {:>9} {:>10} {:>9} {:>7}",
        "update", "p50", "p99", "max", "updates/s", "CPU", "req/upd"
    );
    let webhook = local.app.state.webhook.clone();
    let secret: Arc<str> = std::env::var("TELEGRAM_WEBHOOK_SECRET")
        .unwrap_or_else(|_| tokenbill_dev::DEV_WEBHOOK_SECRET.to_owned())
        .into();
    // Every update id is new: a repeated one is answered as already done.
    let next_id = Arc::new(AtomicU32::new(1));
    let post = move |update: Value| {
        let (webhook, secret) = (webhook.clone(), secret.clone());
        async move {
            let request = http::Request::builder()
                .method("POST")
                .uri("/telegram/webhook")
                .header(telegram_webhook::SECRET_HEADER, &*secret)
                .header("content-type", "application/json")
                .body(update.to_string())
                .expect("request");
            let response = webhook.handle(request).await;
            assert_eq!(response.status(), 200, "{update}: {}", response.body());
            assert!(
                response.body().contains("method"),
                "no reply to {update}: {}",
                response.body()
            );
        }
    };
    // Warm-up: registers the clickers, fills the catalog cache, wakes the JIT.
    for i in 0..64 {
        post(message(
            next_id.fetch_add(1, Ordering::Relaxed),
            CLICKERS + i % 16,
            "/start",
        ))
        .await;
        post(click(next_id.fetch_add(1, Ordering::Relaxed), CLICKERS + i % 16, "buy")).await;
    }
    for (what, update) in kinds() {
        let (post, next_id) = (post.clone(), next_id.clone());
        let mut measured: Measured = phase(1, 0, updates as u64, move |_, i| {
            post(update(next_id.fetch_add(1, Ordering::Relaxed), i as i64))
        })
        .await;
        println!(
            "{what:<32} {:>7.1}ms {:>7.1}ms {:>7.1}ms {:>8.0}/s {:>7.0}us {:>7.2}",
            measured.percentile_ms(0.5),
            measured.percentile_ms(0.99),
            measured.percentile_ms(1.0),
            measured.rate(),
            measured.cpu_per_op_us(),
            measured.requests_per_op(),
        );
    }
    Ok(())
}
