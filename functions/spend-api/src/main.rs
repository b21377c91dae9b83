use lambda_http::{Error, Request, service_fn};
use spend_api::{SpendApi, SpendConfig};
use tokenbill::Store;

#[tokio::main]
async fn main() -> Result<(), Error> {
    tokenbill::telemetry::init(true);
    let sdk = tokenbill::aws::sdk_config().await;
    let config = SpendConfig::from_lookup(|name| std::env::var(name).ok())?;
    let store = Store::new(aws_sdk_dynamodb::Client::new(&sdk), tokenbill::aws::table_name());
    let mut api = SpendApi::new(store, config);
    if std::env::var("NOTIFICATION_QUEUE_URL").is_ok() {
        api = api.with_queue(tokenbill::queue::NotificationQueue::from_env(
            aws_sdk_sqs::Client::new(&sdk),
        )?);
    }
    let api = &api;
    lambda_http::run(service_fn(move |request: Request| async move {
        Ok::<_, Error>(api.handle(request).await)
    }))
    .await
}
