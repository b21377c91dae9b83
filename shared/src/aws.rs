//! SDK configuration, loaded once per cold start.
//!
//! Endpoints come from the standard variables, so the same binaries talk
//! to AWS or to the local stack: `AWS_ENDPOINT_URL_DYNAMODB`,
//! `AWS_ENDPOINT_URL_SQS`, `AWS_ENDPOINT_URL_SCHEDULER`.

use aws_config::{BehaviorVersion, SdkConfig};

pub async fn sdk_config() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest()).load().await
}

/// The table name from `TOKENBILL_TABLE` (the template sets it; local
/// tools default to `tokenbill`).
pub fn table_name() -> String {
    std::env::var("TOKENBILL_TABLE").unwrap_or_else(|_| "tokenbill".to_owned())
}
