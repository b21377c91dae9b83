//! SDK configuration, loaded once per cold start.
//!
//! Endpoints come from the standard variables, so the same binaries talk
//! to AWS or to the local stack: `AWS_ENDPOINT_URL_DYNAMODB`,
//! `AWS_ENDPOINT_URL_SQS`, `AWS_ENDPOINT_URL_SCHEDULER`.

use aws_config::{BehaviorVersion, SdkConfig};
use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};

pub async fn sdk_config() -> SdkConfig {
    // rustls with ring, the provider the Telegram and provider clients
    // use too: one crypto library in every bootstrap.
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https();
    aws_config::defaults(BehaviorVersion::latest())
        .http_client(http)
        .load()
        .await
}

/// The table name from `TOKENBILL_TABLE` (the template sets it; local
/// tools default to `tokenbill`).
pub fn table_name() -> String {
    std::env::var("TOKENBILL_TABLE").unwrap_or_else(|_| "tokenbill".to_owned())
}
