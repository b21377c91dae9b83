//! The whole system as `make dev` runs it (`tokenbill_dev::local_app`: the
//! bot with a fake Telegram, the payment webhook with the mock provider
//! and a fake Robokassa, the renewals the sweep charges), on a fresh table
//! with the sample catalog, the HTTP functions served on loopback so that
//! the mock provider's recurring API is reachable over real HTTP.

use tokenbill::Store;
use tokenbill_dev::LocalApp;

pub type BoxError = Box<dyn std::error::Error>;

pub struct Local {
    pub app: LocalApp,
    pub store: Store,
    /// Where the HTTP functions are served (`PUBLIC_BASE_URL`).
    pub base: String,
}

pub async fn start(
    client: &aws_sdk_dynamodb::Client,
    sqs: &aws_sdk_sqs::Client,
    what: &str,
) -> Result<Local, BoxError> {
    let store = Store::new(
        client.clone(),
        format!("bench-{what}-{}", uuid::Uuid::new_v4().simple()),
    );
    tokenbill_dev::prepare(&store, sqs).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let app = tokenbill_dev::local_app(store.clone(), sqs.clone(), "", base.clone()).await?;
    tokio::spawn(tokenbill_dev::serve(
        listener,
        app.state.clone(),
        std::future::pending(),
    ));
    Ok(Local { app, store, base })
}

/// Registers `id` as a Telegram user would by /start.
pub async fn register(store: &Store, id: i64) -> Result<(), BoxError> {
    let registration = tokenbill::domain::user::Registration {
        id: tokenbill::domain::UserId::new(id)?,
        username: None,
        first_name: format!("Bench {id}"),
        last_name: None,
        language: tokenbill::domain::user::Language::En,
        referrer: None,
    };
    store.register_user(&registration).await?;
    Ok(())
}
