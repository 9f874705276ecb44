//! Structured logs on stderr: text for a terminal, JSON for collectors.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::cli::LogFormat;

/// hickory-server logs every DNS request at info; that is a query log, not an agent log.
const QUIET_DNS_REQUESTS: &str = "hickory_server::server=warn";

/// Install the global subscriber.
pub fn init(format: LogFormat, filter: &str) {
    let filter = with_quiet_requests(filter);
    let filter = EnvFilter::try_new(&filter).unwrap_or_else(|e| {
        eprintln!("warning: bad log filter {filter:?} ({e}); using info");
        EnvFilter::new(with_quiet_requests("info"))
    });
    // Colours only for a terminal, never into files or the journal.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// `filter` with DNS request logging at warn, unless the filter names hickory itself.
fn with_quiet_requests(filter: &str) -> String {
    if filter.contains("hickory") {
        filter.to_owned()
    } else {
        format!("{filter},{QUIET_DNS_REQUESTS}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_request_logs_stay_quiet_unless_asked_for() {
        assert_eq!(
            with_quiet_requests("info"),
            "info,hickory_server::server=warn"
        );
        assert_eq!(
            with_quiet_requests("debug,hickory_server=trace"),
            "debug,hickory_server=trace"
        );
        assert!(EnvFilter::try_new(with_quiet_requests("info,agent=debug")).is_ok());
    }
}
