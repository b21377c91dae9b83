//! SDK configuration, loaded once per cold start.
//!
//! Endpoints come from the standard variables, so the same binaries talk
//! to AWS or to the local stack: `AWS_ENDPOINT_URL_DYNAMODB`,
//! `AWS_ENDPOINT_URL_SQS`, `AWS_ENDPOINT_URL_SCHEDULER`.

use aws_config::{BehaviorVersion, SdkConfig};
use aws_sdk_dynamodb::config::SharedHttpClient;
use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};

pub async fn sdk_config() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .http_client(https_client())
        .load()
        .await
}

/// The SDK's HTTP client: rustls with ring, the provider the Telegram and
/// provider clients use too, so every bootstrap links one crypto library.
/// Its pooled connections belong to the Tokio runtime that opened them:
/// code that runs several runtimes (tests) gives each its own client.
pub fn https_client() -> SharedHttpClient {
    aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https()
}

/// The table name from `TOKENBILL_TABLE` (the template sets it; local
/// tools default to `tokenbill`).
pub fn table_name() -> String {
    std::env::var("TOKENBILL_TABLE").unwrap_or_else(|_| "tokenbill".to_owned())
}
