//! Invoked by EventBridge Scheduler: every minute (see template.yaml), a
//! whole sweep; by a subscription's one-time schedule, with
//! `{"subscription_user": <id>}`, that subscription only.

use lambda_runtime::{Error, LambdaEvent, service_fn};
use tokenbill::Store;
use tokenbill::payments::Renewals;
use tokenbill::queue::NotificationQueue;
use tokenbill::timers::{SubscriptionTimers, TimerEvent};

/// The secrets renewal charges need (see [`tokenbill::secrets`]).
const SECRETS: [&str; 3] = ["MOCK_PROVIDER_SECRET", "ROBOKASSA_PASSWORD1", "ROBOKASSA_PASSWORD2"];

#[tokio::main]
async fn main() -> Result<(), Error> {
    tokenbill::telemetry::init(true);
    let sdk = tokenbill::aws::sdk_config().await;
    let store = Store::new(aws_sdk_dynamodb::Client::new(&sdk), tokenbill::aws::table_name())
        .with_timers(SubscriptionTimers::from_env(&sdk));
    let queue = &NotificationQueue::from_env(aws_sdk_sqs::Client::new(&sdk))?;
    let secrets = tokenbill::secrets::load(&sdk, &SECRETS).await?;
    // A provider without its settings is not charged: its subscriptions
    // are reminded and expire like ones without a way to pay.
    let renewals = &Renewals::from_lookup(
        |name| secrets.get(name).cloned().or_else(|| std::env::var(name).ok()),
        &store,
        reqwest::Client::new(),
    )?;
    let store = &store;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<serde_json::Value>| async move {
        if let Ok(TimerEvent { subscription_user }) = serde_json::from_value(event.payload) {
            let report = tokenbill::sweep::sweep_subscription(store, queue, renewals, subscription_user).await?;
            tracing::info!(user = %subscription_user, ?report, "subscription swept");
            return Ok::<_, Error>(serde_json::to_value(report)?);
        }
        let report = tokenbill::sweep::sweep(store, queue, renewals).await?;
        tracing::info!(?report, "sweep done");
        Ok::<_, Error>(serde_json::to_value(report)?)
    }))
    .await
}
