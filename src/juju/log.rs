//! tracing → `juju-log` under Juju, → stderr otherwise.

use std::fmt::Write as _;
use std::sync::Arc;

use tracing::field::{Field, Visit};
use tracing::{Level, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::{Context as LayerContext, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

use super::tools::{HookTools, LogLevel};

/// Sends each event to `juju-log` with the matching level.
pub struct JujuLogLayer {
    tools: Arc<HookTools>,
}

impl JujuLogLayer {
    pub fn new(tools: Arc<HookTools>) -> JujuLogLayer {
        JujuLogLayer { tools }
    }
}

/// Renders an event as `message key=value ...`.
#[derive(Default)]
pub struct LineVisitor {
    message: String,
    fields: String,
}

impl LineVisitor {
    pub fn line(self) -> String {
        if self.fields.is_empty() {
            self.message
        } else if self.message.is_empty() {
            self.fields.trim_start().to_string()
        } else {
            format!("{}{}", self.message, self.fields)
        }
    }
}

impl Visit for LineVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.fields, " {}={}", field.name(), value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={:?}", field.name(), value);
        }
    }
}

fn juju_level(level: &Level) -> LogLevel {
    match *level {
        Level::ERROR => LogLevel::Error,
        Level::WARN => LogLevel::Warning,
        Level::INFO => LogLevel::Info,
        Level::DEBUG => LogLevel::Debug,
        Level::TRACE => LogLevel::Trace,
    }
}

impl<S: Subscriber> Layer<S> for JujuLogLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: LayerContext<'_, S>) {
        let mut v = LineVisitor::default();
        event.record(&mut v);
        // A failing juju-log must not take the hook down; there is nowhere
        // better to report it.
        let _ = self
            .tools
            .juju_log(juju_level(event.metadata().level()), &v.line());
    }
}

/// Parses the `log-level` config value.
pub fn parse_level(s: &str) -> Option<LevelFilter> {
    match s {
        "error" => Some(LevelFilter::ERROR),
        "warn" => Some(LevelFilter::WARN),
        "info" => Some(LevelFilter::INFO),
        "debug" => Some(LevelFilter::DEBUG),
        "trace" => Some(LevelFilter::TRACE),
        _ => None,
    }
}

/// Our own crate logs at `level`; libraries (reqwest, hyper, rustls) only warnings.
fn filter(level: LevelFilter) -> Targets {
    Targets::new()
        .with_default(LevelFilter::WARN.min(level))
        .with_target("nlm", level)
        .with_target("nova_live_migration", level)
}

/// Installs the global subscriber: juju-log under Juju, stderr otherwise.
/// Calling it twice is harmless (the second call does nothing).
pub fn init(tools: Option<Arc<HookTools>>, level: LevelFilter) {
    match tools {
        Some(tools) => {
            let _ = tracing_subscriber::registry()
                .with(JujuLogLayer::new(tools).with_filter(filter(level)))
                .try_init();
        }
        None => {
            let fmt = tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(false)
                .with_target(false)
                .without_time();
            let _ = tracing_subscriber::registry()
                .with(fmt.with_filter(filter(level)))
                .try_init();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::juju::tools::testing::Recorder;

    #[test]
    fn events_reach_juju_log_with_levels_and_fields() {
        let rec = Recorder::default();
        let tools = Arc::new(HookTools::new(Box::new(rec.clone())));
        let sub = tracing_subscriber::registry()
            .with(JujuLogLayer::new(tools).with_filter(filter(LevelFilter::INFO)));
        tracing::subscriber::with_default(sub, || {
            tracing::info!(host = "node1.maas", "disabled the service");
            tracing::warn!("careful");
            tracing::debug!("not shown at info");
        });
        let calls: Vec<String> = rec
            .calls
            .lock()
            .unwrap()
            .iter()
            .map(|(t, a, _)| format!("{t} {}", a.join(" ")))
            .collect();
        assert_eq!(
            calls,
            vec![
                "juju-log --log-level INFO -- disabled the service host=node1.maas",
                "juju-log --log-level WARNING -- careful",
            ]
        );
    }

    #[test]
    fn levels() {
        assert_eq!(parse_level("debug"), Some(LevelFilter::DEBUG));
        assert_eq!(parse_level("verbose"), None);
    }
}
