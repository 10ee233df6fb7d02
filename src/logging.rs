//! Logging: `tracing` events to stderr, filtered per module by `RUST_LOG` (`billing_worker=debug,sqlx=warn`),
//! as JSON lines or as text (`BILLING_LOG_FORMAT`).
//!
//! Why these defaults: a log collector reads JSON, a person at a terminal reads text, so without a setting the
//! format follows whether stderr is a terminal. A `RUST_LOG` that cannot be parsed is a configuration error (the
//! process exits 2 saying why), not a silent fall-back that hides the debug output someone asked for.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Text,
}

/// What the environment asks for: the format and the filter (`info` when `RUST_LOG` is unset).
pub fn from_env(format: Option<&str>, filter: Option<&str>, terminal: bool) -> Result<(Format, EnvFilter), String> {
    let format = match format.map(str::trim) {
        None | Some("") => {
            if terminal {
                Format::Text
            } else {
                Format::Json
            }
        }
        Some("json") => Format::Json,
        Some("text") => Format::Text,
        Some(other) => return Err(format!("BILLING_LOG_FORMAT: expected json or text, got {other:?}")),
    };
    let filter = match filter.map(str::trim) {
        None | Some("") => EnvFilter::new("info"),
        Some(f) => EnvFilter::try_new(f).map_err(|e| format!("RUST_LOG {f:?}: {e}"))?,
    };
    Ok((format, filter))
}

/// Install the process-wide subscriber writing to `writer`.
pub fn install<W>(format: Format, filter: EnvFilter, ansi: bool, writer: W)
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer);
    match format {
        Format::Json => builder.json().with_current_span(true).with_span_list(false).init(),
        Format::Text => builder.with_ansi(ansi).init(),
    }
}

/// Logging as the environment asks, to stderr.
pub fn init_from_env() -> Result<(), String> {
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let format = std::env::var("BILLING_LOG_FORMAT").ok();
    let filter = std::env::var("RUST_LOG").ok();
    let (format, filter) = from_env(format.as_deref(), filter.as_deref(), terminal)?;
    install(format, filter, terminal, std::io::stderr);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_follows_the_setting_or_the_terminal() {
        assert_eq!(from_env(None, None, true).unwrap().0, Format::Text);
        assert_eq!(from_env(None, None, false).unwrap().0, Format::Json);
        assert_eq!(from_env(Some("text"), None, false).unwrap().0, Format::Text);
        assert_eq!(from_env(Some("json"), None, true).unwrap().0, Format::Json);
        let e = from_env(Some("xml"), None, true).unwrap_err();
        assert_eq!(e, "BILLING_LOG_FORMAT: expected json or text, got \"xml\"");
    }

    #[test]
    fn filters_per_module_and_refuses_what_it_cannot_parse() {
        let (_, f) = from_env(None, Some("info,sqlx=warn,billing_worker::store=debug"), false).unwrap();
        let text = f.to_string();
        assert!(text.contains("sqlx=warn") && text.contains("billing_worker::store=debug"), "{text}");
        let e = from_env(None, Some("info,sqlx=loud"), false).unwrap_err();
        assert!(e.starts_with("RUST_LOG \"info,sqlx=loud\":"), "{e}");
    }
}
