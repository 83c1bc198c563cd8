//! The charm's `dispatch` and the host CLI, in one binary.

use std::process::ExitCode;
use std::sync::Arc;

use nlm::juju::{Context, ContextError, Event, HookTools, ToolError};
use nlm::paths::Paths;

fn main() -> ExitCode {
    let env = |k: &str| std::env::var(k).ok();
    let paths = Paths::from_env(env);
    match Context::from_env(env) {
        Ok(ctx) => ExitCode::from(dispatch(&ctx, &paths)),
        Err(ContextError::NotJuju) => {
            nlm::juju::log::init(None, tracing_subscriber::filter::LevelFilter::INFO);
            let args = match utf8_args(std::env::args_os().skip(1)) {
                Ok(args) => args,
                Err(msg) => {
                    eprintln!("nova-live-migration: {msg}");
                    return ExitCode::from(2);
                }
            };
            let code = nlm::cli::main(
                &args,
                &paths,
                &mut std::io::stdout(),
                &mut std::io::stderr(),
            );
            ExitCode::from(code.clamp(0, 255) as u8)
        }
        Err(e) => {
            eprintln!("nova-live-migration: {e}");
            ExitCode::from(1)
        }
    }
}

/// The CLI's arguments as text; a non-UTF-8 one is refused (shown with
/// the bytes that are not text escaped) rather than panicking in
/// `std::env::args`.
fn utf8_args(args: impl Iterator<Item = std::ffi::OsString>) -> Result<Vec<String>, String> {
    args.enumerate()
        .map(|(i, a)| {
            a.into_string().map_err(|a| {
                format!(
                    "argument {} ({}) is not valid UTF-8; give names and options as UTF-8 text (see nova-live-migration --help)",
                    i + 1,
                    nlm::text::shown(&format!("{a:?}"), 80)
                )
            })
        })
        .collect()
}

/// Runs one hook or action; returns the process exit code.
fn dispatch(ctx: &Context, paths: &Paths) -> u8 {
    let tools = Arc::new(HookTools::process());
    // The validated config's level (INFO while the config is invalid: the
    // hooks then block saying why).
    let level = tools
        .config_get()
        .ok()
        .and_then(|c| nlm::config::Config::from_values(&c).ok())
        .and_then(|c| nlm::juju::log::parse_level(&c.log_level))
        .unwrap_or(tracing_subscriber::filter::LevelFilter::INFO);
    nlm::juju::log::init(Some(tools.clone()), level);
    let unit = nlm::charm::Unit {
        ctx,
        tools: &tools,
        paths,
    };
    match &ctx.event {
        Event::Hook(name) => match unit.hook(name) {
            Ok(()) => 0,
            Err(e) => {
                // A hook tool failed: let Juju retry the hook.
                eprintln!("hook {name} failed: {e}");
                1
            }
        },
        Event::Action(name) => match nlm::actions::run(&unit, name) {
            Ok(()) => 0,
            Err(e) => {
                // Try to fail the action with the reason (and summary and
                // report, as every failed action has them); exit 0 so Juju
                // keeps our message rather than "exit status 1".
                let hint = match &e {
                    ToolError::Parse { tool, .. } if tool == "action-get" => {
                        "; run it again with parameters that are plain text"
                    }
                    _ => "",
                };
                let msg = format!("{name} could not run: {e}{hint}");
                let failed =
                    nlm::actions::fail(&unit, name, &msg).or_else(|_| tools.action_fail(&msg));
                match failed {
                    Ok(()) => 0,
                    Err(_) => {
                        eprintln!("{msg}");
                        1
                    }
                }
            }
        },
    }
}
