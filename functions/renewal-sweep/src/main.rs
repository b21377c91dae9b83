//! Invoked by EventBridge Scheduler every minute (see template.yaml); the
//! event's content does not matter.

use lambda_runtime::{Error, LambdaEvent, service_fn};
use tokenbill::Store;
use tokenbill::queue::NotificationQueue;

#[tokio::main]
async fn main() -> Result<(), Error> {
    tokenbill::telemetry::init(true);
    let sdk = tokenbill::aws::sdk_config().await;
    let store = &Store::new(aws_sdk_dynamodb::Client::new(&sdk), tokenbill::aws::table_name());
    let queue = &NotificationQueue::from_env(aws_sdk_sqs::Client::new(&sdk))?;
    lambda_runtime::run(service_fn(move |_: LambdaEvent<serde_json::Value>| async move {
        let report = tokenbill::sweep::sweep(store, queue).await?;
        tracing::info!(?report, "sweep done");
        Ok::<_, Error>(serde_json::to_value(report)?)
    }))
    .await
}
