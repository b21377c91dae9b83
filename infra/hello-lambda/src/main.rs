//! The smallest Rust Lambda built like the functions (same runtime crate,
//! same tokio, same release profile): its init time and memory are the
//! floor `make bench` measures each function against.

use lambda_runtime::{Error, LambdaEvent, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::run(service_fn(|event: LambdaEvent<serde_json::Value>| async move {
        Ok::<_, Error>(serde_json::json!({ "hello": event.payload }))
    }))
    .await
}
