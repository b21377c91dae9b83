//! The runner's logs: one line per event, led by the function it came from
//! (the outermost span: `telegram-webhook`, `notifier`, ...), each
//! function in its own colour on a terminal; JSON lines with `--json`.

use std::fmt;
use std::io::IsTerminal;

use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::prelude::*;
use tracing_subscriber::registry::LookupSpan;

/// Where an event outside every function's span comes from.
const RUNNER: &str = "dev-runner";

pub fn init(json: bool) {
    let filter = tokenbill::telemetry::filter();
    let registry = tracing_subscriber::registry().with(filter);
    // A second init (tests) is harmless: the first subscriber stays.
    let _ = if json {
        registry
            .with(tracing_subscriber::fmt::layer().json().flatten_event(true))
            .try_init()
    } else {
        registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(std::io::stdout().is_terminal())
                    .event_format(ByFunction),
            )
            .try_init()
    };
}

/// `  telegram-webhook  WARN update failed; ... update_id=3`
pub struct ByFunction;

impl<S, N> FormatEvent<S, N> for ByFunction
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let function = ctx
            .event_scope()
            .and_then(|scope| scope.from_root().next())
            .map_or(RUNNER, |span| span.name());
        let level = *event.metadata().level();
        if writer.has_ansi_escapes() {
            write!(writer, "\x1b[{}m{function:>18}\x1b[0m ", colour(function))?;
            let level_colour = match level {
                tracing::Level::ERROR => "1;31",
                tracing::Level::WARN => "33",
                _ => "2",
            };
            write!(writer, "\x1b[{level_colour}m{level:>5}\x1b[0m ")?;
        } else {
            write!(writer, "{function:>18} {level:>5} ")?;
        }
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

/// A fixed ANSI colour per function name, so a function keeps its colour
/// from run to run.
fn colour(function: &str) -> &'static str {
    const PALETTE: [&str; 6] = ["36", "35", "32", "34", "33", "96"];
    let hash = function
        .bytes()
        .fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(b as usize));
    PALETTE[hash % PALETTE.len()]
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing::Instrument;
    use tracing::instrument::WithSubscriber;

    use super::*;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    async fn lines(ansi: bool) -> Vec<String> {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .with_ansi(ansi)
                .with_writer(move || writer.clone())
                .event_format(ByFunction),
        );
        async {
            tracing::info!("ready");
            async {
                async { tracing::warn!(update_id = 3, "update failed") }
                    .instrument(tracing::info_span!("store"))
                    .await
            }
            .instrument(tracing::info_span!("telegram-webhook"))
            .await;
        }
        .with_subscriber(subscriber)
        .await;
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        text.lines().map(str::to_owned).collect()
    }

    #[tokio::test]
    async fn each_line_names_its_function_and_colours_it_on_a_terminal() {
        let plain = lines(false).await;
        assert_eq!(
            plain,
            [
                format!("{RUNNER:>18}  INFO ready"),
                format!("{:>18}  WARN update failed update_id=3", "telegram-webhook"),
            ]
        );
        let coloured = lines(true).await;
        let webhook = format!("\x1b[{}m{:>18}\x1b[0m", colour("telegram-webhook"), "telegram-webhook");
        assert!(coloured[1].starts_with(&webhook), "{:?}", coloured[1]);
        assert_ne!(
            colour("telegram-webhook"),
            colour("notifier"),
            "two functions, two colours"
        );
    }
}
