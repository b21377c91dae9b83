//! Secrets: never in the template, never in logs.
//!
//! For a secret `NAME`, the environment variable `NAME` is used when set
//! (local runs, tests); otherwise `NAME_PARAM` names an SSM Parameter Store
//! SecureString, read with decryption once per cold start.

use std::collections::HashMap;

use aws_config::SdkConfig;

/// The secrets `names`, by name. A name with neither variable is absent.
pub async fn load(config: &SdkConfig, names: &[&str]) -> Result<HashMap<String, String>, String> {
    let mut found = HashMap::new();
    let mut ssm = None;
    for name in names {
        if let Some(value) = std::env::var(name).ok().filter(|v| !v.is_empty()) {
            found.insert((*name).to_owned(), value);
            continue;
        }
        let Ok(parameter) = std::env::var(format!("{name}_PARAM")) else {
            continue;
        };
        let client = ssm.get_or_insert_with(|| aws_sdk_ssm::Client::new(config));
        let output = client
            .get_parameter()
            .name(&parameter)
            .with_decryption(true)
            .send()
            .await
            // The parameter's name may be shown; its value never is.
            .map_err(|e| {
                format!(
                    "reading {name} from SSM parameter {parameter}: {}",
                    aws_sdk_ssm::error::DisplayErrorContext(e)
                )
            })?;
        let value = output
            .parameter
            .and_then(|p| p.value)
            .ok_or_else(|| format!("SSM parameter {parameter} is empty"))?;
        found.insert((*name).to_owned(), value);
    }
    Ok(found)
}
