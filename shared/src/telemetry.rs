//! Logging setup shared by every binary: JSON lines on Lambda (CloudWatch
//! reads them), readable text on a terminal. `RUST_LOG` filters, with the
//! `target=level` directives of `Targets` (no regex engine in the
//! bootstrap, unlike `EnvFilter`).

use std::io::IsTerminal;

use tracing_subscriber::filter::Targets;
use tracing_subscriber::prelude::*;

const DEFAULT_FILTER: &str = "info,aws_config=warn,aws_smithy_runtime=warn";

/// The filter `RUST_LOG` asks for, or the default when it is unset or
/// malformed.
pub fn filter() -> Targets {
    std::env::var("RUST_LOG")
        .ok()
        .and_then(|directives| directives.parse().ok())
        .unwrap_or_else(|| DEFAULT_FILTER.parse().expect("the default filter parses"))
}

pub fn init(json: bool) {
    // Colours only for a person at a terminal, not for files or log services.
    let format = tracing_subscriber::fmt::layer()
        .with_target(false)
        .with_ansi(std::io::stdout().is_terminal());
    let registry = tracing_subscriber::registry().with(filter());
    // A second init (tests) is harmless: the first subscriber stays.
    let _ = if json {
        registry.with(format.json().flatten_event(true)).try_init()
    } else {
        registry.with(format).try_init()
    };
}
