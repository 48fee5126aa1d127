//! The tracing subscriber: text or JSON lines on stderr, filtered by `RUST_LOG` when set, else
//! by the configured level.

use std::str::FromStr;

use tracing_subscriber::EnvFilter;

use crate::Error;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

impl FromStr for LogFormat {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            other => Err(Error::LogFormat(other.to_owned())),
        }
    }
}

/// Checks a level directive (`info`, `debug,kubeedge_beehive=trace`…) without installing it.
pub fn parse_filter(directive: &str) -> Result<EnvFilter, Error> {
    EnvFilter::builder().parse(directive).map_err(|source| Error::LogLevel { directive: directive.to_owned(), source })
}

/// Installs the global subscriber. `RUST_LOG`, when set and valid, overrides `level`.
pub fn init_logging(level: &str, format: LogFormat) -> Result<(), Error> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(env) if !env.trim().is_empty() => parse_filter(&env).or_else(|_| parse_filter(level))?,
        _ => parse_filter(level)?,
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Text => builder.with_ansi(false).try_init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).try_init(),
    };
    result.map_err(|_| Error::AlreadyInstalled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_levels() {
        assert_eq!("json".parse::<LogFormat>().unwrap(), LogFormat::Json);
        assert!("xml".parse::<LogFormat>().is_err());
        assert!(parse_filter("info,kubeedge_beehive=debug").is_ok());
        assert!(parse_filter("info,=[").is_err());
    }
}
