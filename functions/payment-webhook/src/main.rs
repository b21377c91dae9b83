use lambda_http::{Error, Request, service_fn};
use payment_webhook::{PaymentConfig, PaymentWebhook, SECRETS};
use tokenbill::Store;
use tokenbill::queue::NotificationQueue;

#[tokio::main]
async fn main() -> Result<(), Error> {
    tokenbill::telemetry::init(true);
    let sdk = tokenbill::aws::sdk_config().await;
    let secrets = tokenbill::secrets::load(&sdk, &SECRETS).await?;
    let config = PaymentConfig::from_lookup(|name| secrets.get(name).cloned().or_else(|| std::env::var(name).ok()))?;
    // Payments extend subscriptions: their schedules move with them.
    let store = Store::new(aws_sdk_dynamodb::Client::new(&sdk), tokenbill::aws::table_name())
        .with_timers(tokenbill::timers::SubscriptionTimers::from_env(&sdk));
    let queue = NotificationQueue::from_env(aws_sdk_sqs::Client::new(&sdk))?;
    let webhook = &PaymentWebhook::new(store, queue, config);
    lambda_http::run(service_fn(move |request: Request| async move {
        Ok::<_, Error>(webhook.handle(request).await)
    }))
    .await
}
