use clap::Parser;
use tokenbill::store::Store;
use tokenbill_dev::{describe, dev_service_key, local_app, prepare, serve};

/// Runs Tokenbill locally: every function behind one HTTP endpoint.
#[derive(Debug, Parser)]
#[command(name = "tokenbill-dev", version)]
struct Args {
    #[arg(long, env = "TOKENBILL_DEV_ADDR", default_value = "127.0.0.1:3000")]
    addr: std::net::SocketAddr,
    #[arg(long, env = "TOKENBILL_TABLE", default_value = "tokenbill")]
    table: String,
    /// Log JSON lines instead of coloured text.
    #[arg(long)]
    json: bool,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    tokenbill_dev::logs::init(args.json);
    let config = tokenbill::aws::sdk_config().await;
    let store = Store::new(aws_sdk_dynamodb::Client::new(&config), args.table)
        .with_timers(Some(tokenbill_dev::dev_timers(&config)));
    let sqs = aws_sdk_sqs::Client::new(&config);
    for step in prepare(&store, &sqs).await? {
        tracing::info!("{step}");
    }
    let listener = tokio::net::TcpListener::bind(args.addr).await?;
    let addr = listener.local_addr()?;
    let service_key = dev_service_key(&store).await?;
    let app = local_app(store, sqs, "", format!("http://{addr}")).await?;
    let _background = app.spawn_background();
    println!("{}", describe(addr, &service_key, app.state.sandbox.is_some()));
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("stopping");
    };
    serve(listener, app.state, shutdown).await?;
    Ok(())
}
