use lambda_http::{Error, Request, service_fn};
use telegram_webhook::{BotConfig, Webhook};
use tokenbill::Store;

#[tokio::main]
async fn main() -> Result<(), Error> {
    tokenbill::telemetry::init(true);
    let config = BotConfig::from_env()?;
    let sdk = tokenbill::aws::sdk_config().await;
    let store = Store::new(aws_sdk_dynamodb::Client::new(&sdk), tokenbill::aws::table_name());
    let webhook = &Webhook::new(store, telegram_webhook::bot_from_env()?, config);
    lambda_http::run(service_fn(move |request: Request| async move {
        Ok::<_, Error>(webhook.handle(request).await)
    }))
    .await
}
