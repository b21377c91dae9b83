use aws_lambda_events::event::sqs::SqsEvent;
use lambda_runtime::{Error, LambdaEvent, service_fn};
use notifier::{Notifier, SECRETS};
use tokenbill::Store;

#[tokio::main]
async fn main() -> Result<(), Error> {
    tokenbill::telemetry::init(true);
    let sdk = tokenbill::aws::sdk_config().await;
    let secrets = tokenbill::secrets::load(&sdk, &SECRETS).await?;
    let token = secrets
        .get("TELEGRAM_BOT_TOKEN")
        .cloned()
        .ok_or("TELEGRAM_BOT_TOKEN is not set")?;
    let store = Store::new(aws_sdk_dynamodb::Client::new(&sdk), tokenbill::aws::table_name());
    let queue_url = std::env::var("NOTIFICATION_QUEUE_URL").map_err(|_| "NOTIFICATION_QUEUE_URL is not set")?;
    let notifier = &Notifier::new(
        store,
        tokenbill::telegram::bot(token)?,
        aws_sdk_sqs::Client::new(&sdk),
        queue_url,
    );
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        Ok::<_, Error>(notifier.handle(event.payload).await)
    }))
    .await
}
