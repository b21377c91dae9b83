//! The admin CLI and the dev runner, driven in-process against DynamoDB Local.

use clap::Parser;
use tokenbill::domain::UserId;
use tokenbill::domain::user::{Language, Registration};
use tokenbill_admin::{AdminError, Cli, run};
use tokenbill_tests::{fresh_store, sdk_config, user};

async fn admin(table: &str, args: &[&str]) -> Result<String, AdminError> {
    let mut argv = vec!["tokenbill-admin", "--table", table];
    argv.extend_from_slice(args);
    let cli = Cli::try_parse_from(argv).expect("valid arguments");
    let mut out = Vec::new();
    run(cli, &sdk_config().await, &mut out).await?;
    Ok(String::from_utf8(out).expect("utf-8 output"))
}

fn registration(id: i64) -> Registration {
    Registration {
        id: user(id),
        username: Some("ann".into()),
        first_name: "Ann".into(),
        last_name: None,
        language: Language::Ru,
        referrer: None,
    }
}

#[tokio::test]
async fn registration_is_idempotent_and_keeps_first_facts() {
    let store = fresh_store().await;
    let (first, created) = store.register_user(&registration(100)).await.unwrap();
    assert!(created);
    assert_eq!(first.language, Language::Ru);
    let mut again = registration(100);
    again.username = Some("ann_new".into());
    again.language = Language::En;
    again.referrer = Some(UserId::new(5).unwrap());
    let (second, created) = store.register_user(&again).await.unwrap();
    assert!(!created);
    assert_eq!(second.username.as_deref(), Some("ann_new"), "names follow Telegram");
    assert_eq!(second.first_seen, first.first_seen);
    assert_eq!(second.language, Language::Ru, "a chosen language is kept");
    assert_eq!(second.referrer, None, "a referrer is only taken at first registration");
    assert_eq!(store.user(user(100)).await.unwrap(), Some(second));
    assert_eq!(store.user(user(101)).await.unwrap(), None);
}

#[tokio::test]
async fn tariffs_seed_list_disable() {
    let store = fresh_store().await;
    let sample = concat!(env!("CARGO_MANIFEST_DIR"), "/../infra/tariffs.sample.json");
    let out = admin(store.table(), &["tariffs", "seed", sample]).await.unwrap();
    assert_eq!(out.trim(), "seeded 3 tariffs");
    let tariffs = store.tariffs().await.unwrap();
    assert_eq!(
        tariffs.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(),
        ["pack_100", "pack_1000", "sub_month"]
    );

    admin(store.table(), &["tariffs", "disable", "pack_100"]).await.unwrap();
    let list = admin(store.table(), &["tariffs", "list"]).await.unwrap();
    let line = list.lines().find(|l| l.starts_with("pack_100")).unwrap();
    assert!(line.contains("disabled"), "{line}");
    assert!(
        list.lines()
            .find(|l| l.starts_with("sub_month"))
            .unwrap()
            .contains("active")
    );
    let missing = admin(store.table(), &["tariffs", "disable", "nope"]).await.unwrap_err();
    assert!(missing.to_string().contains("not found"), "{missing}");
}

#[tokio::test]
async fn a_bad_catalog_changes_nothing() {
    let store = fresh_store().await;
    let dir = std::env::temp_dir().join(tokenbill_tests::unique_name("catalog"));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("tariffs.json");
    let mut tariffs: serde_json::Value = serde_json::from_str(tokenbill_dev::SAMPLE_TARIFFS).unwrap();
    tariffs[2]["prices"]["XTR"] = "10.5".into();
    std::fs::write(&file, tariffs.to_string()).unwrap();
    let err = admin(store.table(), &["tariffs", "seed", file.to_str().unwrap()])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("decimal places"), "{err}");
    assert!(store.tariffs().await.unwrap().is_empty());
}

#[tokio::test]
async fn grant_and_show_user() {
    let store = fresh_store().await;
    let err = admin(store.table(), &["tokens", "grant", "200", "50", "--reason", "welcome"])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("user 200 not found"), "{err}");

    store.register_user(&registration(200)).await.unwrap();
    let args = [
        "tokens",
        "grant",
        "200",
        "50",
        "--reason",
        "welcome",
        "--idempotency-key",
        "support-1",
    ];
    let out = admin(store.table(), &args).await.unwrap();
    assert!(out.starts_with("granted 50 tokens to user 200"), "{out}");
    let out = admin(store.table(), &args).await.unwrap();
    assert!(out.starts_with("already granted 50"), "{out}");
    admin(store.table(), &["tokens", "grant", "200", "25", "--reason", "sorry"])
        .await
        .unwrap();

    let shown = admin(store.table(), &["user", "show", "200"]).await.unwrap();
    assert!(shown.contains("available 75"), "{shown}");
    assert!(shown.contains("2 entries"), "{shown}");
    assert!(shown.contains("audit    ok"), "{shown}");
    assert!(shown.contains("sorry") && shown.contains("welcome"), "{shown}");
}

#[tokio::test]
async fn dev_runner_prepares_the_stack_and_answers_health() {
    let store = fresh_store().await;
    let sqs = tokenbill_tests::sqs().await;
    let queues = tokenbill_tests::unique_name("dev-");
    let steps = tokenbill_dev::prepare(&store, &sqs).await.unwrap();
    assert!(steps.iter().any(|s| s.contains("seeded 3 sample tariffs")), "{steps:?}");
    let again = tokenbill_dev::prepare(&store, &sqs).await.unwrap();
    assert!(
        !again.iter().any(|s| s.contains("seeded")),
        "an existing catalog is left alone"
    );

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(tokenbill_dev::serve(
        listener,
        tokenbill_dev::local_app(store.clone(), sqs.clone(), &queues, "http://127.0.0.1".into())
            .await
            .unwrap()
            .state,
        async {
            let _ = stopped.await;
        },
    ));
    let health = reqwest::get(format!("http://{addr}/health")).await.unwrap();
    assert_eq!(health.status(), 200);
    let body: serde_json::Value = health.json().await.unwrap();
    assert_eq!(body["status"], "ok");
    assert_eq!(body["table"], store.table());

    // A table that does not exist makes health say so.
    let broken = tokenbill::Store::new(store.client().clone(), "missing-table");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let broken_addr = listener.local_addr().unwrap();
    let broken_server = tokio::spawn(tokenbill_dev::serve(
        listener,
        tokenbill_dev::local_app(broken, sqs.clone(), &queues, "http://127.0.0.1".into())
            .await
            .unwrap()
            .state,
        std::future::pending(),
    ));
    let health = reqwest::get(format!("http://{broken_addr}/health")).await.unwrap();
    assert_eq!(health.status(), 503);
    broken_server.abort();

    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn promo_commands_create_batch_list_show_disable() {
    let store = fresh_store().await;
    let table = store.table().to_owned();
    let out = admin(
        &table,
        &[
            "promo",
            "create",
            "spring",
            "--percent",
            "15",
            "--max",
            "100",
            "--until",
            "2030-01-01T00:00:00Z",
        ],
    )
    .await
    .unwrap();
    assert_eq!(out.trim(), "created SPRING: 15% off");
    let again = admin(&table, &["promo", "create", "SPRING", "--bonus-tokens", "5"])
        .await
        .unwrap_err();
    assert!(again.to_string().contains("already exists"), "{again}");
    let bad = admin(&table, &["promo", "create", "BAD", "--percent", "150"])
        .await
        .unwrap_err();
    assert!(bad.to_string().contains("at most 100"), "{bad}");
    assert!(
        Cli::try_parse_from([
            "tokenbill-admin",
            "promo",
            "create",
            "TWO",
            "--percent",
            "5",
            "--bonus-tokens",
            "5"
        ])
        .is_err(),
        "two effects at once are refused"
    );
    assert!(
        Cli::try_parse_from(["tokenbill-admin", "promo", "create", "NONE"]).is_err(),
        "an effect is required"
    );

    let csv = admin(
        &table,
        &[
            "promo",
            "batch",
            "--prefix",
            "GIFT",
            "--count",
            "5",
            "--bonus-tokens",
            "100",
        ],
    )
    .await
    .unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "code,effect,valid_until");
    assert_eq!(lines.len(), 6);
    let codes: std::collections::HashSet<&str> = lines[1..].iter().map(|l| l.split(',').next().unwrap()).collect();
    assert_eq!(codes.len(), 5);
    for code in &codes {
        assert!(code.starts_with("GIFT-") && code.len() == 13, "{code}");
        let promo = store
            .promo(&tokenbill::domain::promo::PromoCodeText::new(code).unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (promo.max_redemptions, promo.per_user_limit),
            (Some(1), 1),
            "batch codes are single-use"
        );
    }

    admin(&table, &["promo", "disable", "spring"]).await.unwrap();
    let list = admin(&table, &["promo", "list"]).await.unwrap();
    assert_eq!(list.lines().count(), 6);
    let spring = list.lines().find(|l| l.starts_with("SPRING")).unwrap();
    assert!(spring.contains("disabled") && spring.contains("/ 100"), "{spring}");
    let shown = admin(&table, &["promo", "show", "spring"]).await.unwrap();
    let json: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(json["effect"]["percent"], "15");
    assert_eq!(json["active"], false);
}

/// `payments refund`: Stars go back through the Bot API and the tokens
/// come back with a ledger entry, once; nothing happens when the user has
/// already spent them; other providers need the operator's word.
#[tokio::test]
async fn payments_refund_returns_stars_and_takes_the_tokens_back() {
    use tokenbill::domain::invoice::{InvoiceStatus, Provider};
    use tokenbill::domain::ledger::DebitKind;
    use tokenbill::domain::{IdempotencyKey, TariffId};
    use tokenbill::store::{BalanceRequest, NewInvoice};

    let store = fresh_store().await;
    tokenbill_tests::seed_catalog(&store).await;
    let telegram = tokenbill_dev::fake_telegram::FakeTelegram::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(telegram.clone().serve(listener));
    let paid = |id: i64, provider: Provider, charge: &'static str| {
        let store = store.clone();
        async move {
            store.register_user(&registration(id)).await.unwrap();
            let invoice = store
                .create_invoice(
                    NewInvoice {
                        user: user(id),
                        tariff_id: TariffId::new("pack_100").unwrap(),
                        provider,
                        promo: None,
                    },
                    chrono::Duration::hours(1),
                )
                .await
                .unwrap();
            store.pay_invoice(&invoice.id, Some(charge.into())).await.unwrap();
            invoice.id.to_string()
        }
    };
    let refund = |invoice: &str, extra: &[&str]| {
        let mut args = vec![
            "payments",
            "refund",
            invoice,
            "--bot-token",
            "1:TEST",
            "--telegram-api-url",
            &api,
        ];
        args.extend_from_slice(extra);
        let table = store.table().to_owned();
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        async move { admin(&table, &args.iter().map(String::as_str).collect::<Vec<_>>()).await }
    };

    let stars = paid(300, Provider::TelegramStars, "charge-300").await;
    let done = refund(&stars, &[]).await.unwrap();
    assert!(
        done.contains("100 tokens taken back") && done.contains("now has 0"),
        "{done}"
    );
    let calls = telegram.take_calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].method, "refundstarpayment");
    assert_eq!(calls[0].params["user_id"], 300);
    assert_eq!(calls[0].params["telegram_payment_charge_id"], "charge-300");
    let invoice = store
        .invoice(&tokenbill::domain::InvoiceId::new(&stars).unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(invoice.status, InvoiceStatus::Refunded);
    assert!(store.audit(user(300)).await.unwrap().is_ok());
    // Again: recorded once, Telegram not asked twice.
    assert!(refund(&stars, &[]).await.unwrap().contains("(already)"));
    assert!(telegram.take_calls().is_empty());
    assert_eq!(store.balance(user(300)).await.unwrap().0.available.get(), 0);

    // Spent: the refund would overdraw, so nothing is done anywhere.
    let spent = paid(301, Provider::TelegramStars, "charge-301").await;
    store
        .apply(BalanceRequest::debit(
            user(301),
            DebitKind::Spend,
            tokenbill_tests::tokens(60),
            IdempotencyKey::new("spend-301").unwrap(),
        ))
        .await
        .unwrap();
    let refused = refund(&spent, &[]).await.unwrap_err().to_string();
    assert!(refused.contains("40 tokens available"), "{refused}");
    assert!(telegram.take_calls().is_empty());
    assert_eq!(store.balance(user(301)).await.unwrap().0.available.get(), 40);

    // The mock provider: only on the operator's word that the money went back.
    let mock = paid(302, Provider::Mock, "mock-302").await;
    let refused = refund(&mock, &[]).await.unwrap_err().to_string();
    assert!(refused.contains("--external"), "{refused}");
    assert_eq!(store.balance(user(302)).await.unwrap().0.available.get(), 100);
    assert!(refund(&mock, &["--external"]).await.unwrap().contains("taken back"));
    assert_eq!(store.balance(user(302)).await.unwrap().0.available.get(), 0);
    assert!(telegram.take_calls().is_empty());

    // Only paid invoices.
    let unknown = refund("nosuchinvoice", &[]).await.unwrap_err().to_string();
    assert!(unknown.contains("no invoice"), "{unknown}");
}

/// `webhook set | info | delete` against a fake Bot API: the URL, the
/// secret token and exactly the update kinds the bot handles.
#[tokio::test]
async fn webhook_commands_register_the_bot_with_telegram() {
    let store = fresh_store().await;
    let telegram = tokenbill_dev::fake_telegram::FakeTelegram::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(telegram.clone().serve(listener));
    let bot = ["--bot-token", "1:TEST", "--telegram-api-url", api.as_str()];
    let run = |args: Vec<&str>| {
        let table = store.table().to_owned();
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        async move { admin(&table, &args.iter().map(String::as_str).collect::<Vec<_>>()).await }
    };

    let url = "https://abc.execute-api.eu-central-1.amazonaws.com/telegram/webhook";
    let mut set = vec!["webhook", "set", url, "--secret", "s3cret_token"];
    set.extend(bot);
    assert!(run(set).await.unwrap().contains("webhook set"));
    let calls = telegram.take_calls();
    assert_eq!(calls[0].method, "setwebhook");
    assert_eq!(calls[0].params["url"], url);
    assert_eq!(calls[0].params["secret_token"], "s3cret_token");
    assert_eq!(
        calls[0].params["allowed_updates"],
        serde_json::json!(["message", "callback_query", "pre_checkout_query", "my_chat_member"])
    );

    let mut info = vec!["webhook", "info"];
    info.extend(bot);
    let shown = run(info.clone()).await.unwrap();
    assert!(shown.contains(url) && shown.contains("pre_checkout_query"), "{shown}");

    let mut insecure = vec!["webhook", "set", "http://example.com/hook", "--secret", "x"];
    insecure.extend(bot);
    let refused = run(insecure).await.unwrap_err().to_string();
    assert!(refused.contains("https"), "{refused}");

    let mut delete = vec!["webhook", "delete"];
    delete.extend(bot);
    assert!(run(delete).await.unwrap().contains("deleted"));
    assert!(run(info).await.unwrap().contains("(none)"));
}

/// `keys create | list | revoke`: the key is printed once, only its hash is
/// stored, and a revoked key is marked so.
#[tokio::test]
async fn keys_commands_create_list_and_revoke_service_keys() {
    let store = fresh_store().await;
    let table = store.table().to_owned();
    let created = admin(
        &table,
        &[
            "keys", "create", "--name", "gateway", "--scopes", "spend", "--rate", "200/s",
        ],
    )
    .await
    .unwrap();
    let secret = created
        .lines()
        .find(|line| line.starts_with("tbk_"))
        .expect("the key is printed")
        .to_owned();
    let parsed = tokenbill::domain::service_key::SecretKey::parse(&secret).expect("a well-formed key");
    let stored = store
        .service_key(&parsed.hash())
        .await
        .unwrap()
        .expect("stored by its hash");
    assert_eq!(stored.name, "gateway");
    assert_eq!(stored.rate.get(), 200);
    assert_eq!(stored.scopes, vec![tokenbill::domain::service_key::Scope::Spend]);
    let raw = format!(
        "{:?}",
        store.client().scan().table_name(&table).send().await.unwrap().items()
    );
    assert!(!raw.contains(&secret[17..]), "the secret part is stored nowhere");

    let listed = admin(&table, &["keys", "list"]).await.unwrap();
    assert!(listed.contains(stored.id.as_str()) && listed.contains("gateway") && listed.contains("active"));
    assert!(!listed.contains(&secret), "listings never show the key");

    let revoked = admin(&table, &["keys", "revoke", stored.id.as_str()]).await.unwrap();
    assert!(revoked.contains("revoked"), "{revoked}");
    assert!(
        store
            .service_key(&parsed.hash())
            .await
            .unwrap()
            .unwrap()
            .revoked_at
            .is_some()
    );
    assert!(admin(&table, &["keys", "list"]).await.unwrap().contains("revoked"));

    for bad in [
        vec!["keys", "create", "--name", "x", "--scopes", "admin"],
        vec!["keys", "create", "--name", "x", "--rate", "0/s"],
        vec!["keys", "create", "--name", "", "--rate", "5/s"],
        vec!["keys", "revoke", "000000000000"],
    ] {
        assert!(admin(&table, &bad).await.is_err(), "{bad:?} must be refused");
    }
}
