//! The command line: one file per subcommand, each holding only argument handling and output.
//! The work itself lives in the library modules named after what they are.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub mod access;
pub mod chaos;
pub mod demo;
pub mod down;
pub mod flush;
pub mod instrument;
pub mod relay;
pub mod run;
pub mod runs;
pub mod serve;
pub mod shim;
pub mod status;
pub mod trace;
pub mod up;
pub mod verify;

#[derive(Debug, Parser)]
#[command(name = "obsctl", version, about, propagate_version = true)]
pub struct Cli {
    /// More diagnostics on stderr; repeat for more (-vv).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the embedded backend: receive OTLP, answer Tempo-, Loki- and Prometheus-shaped queries.
    Serve(serve::Args),
    /// Wrap one agent step: a span, a duration sample, success/fail counters and correlated logs.
    Shim(shim::Args),
    /// Stand in for the OpenTelemetry Collector where its image cannot be had: forward OTLP as
    /// a collector config's pipelines say, without processing or queueing it.
    Relay(relay::Args),
    /// Replay telemetry the shim spooled while the collector was unreachable.
    Flush(flush::Args),
    /// Run an Argo Workflow locally, one traced step per pod.
    Run(run::Args),
    /// Print a workflow made observable on a real cluster: every step through `obsctl shim`,
    /// the OTEL environment, labels and annotations.
    Instrument(instrument::Args),
    /// List recorded runs.
    Runs(runs::Args),
    /// Prove that a run's telemetry is complete: spans, counters, exemplars, logs, outputs.
    Verify(verify::Args),
    /// Show one task's trace as a waterfall, with its logs and links.
    Trace(trace::Args),
    /// Break things on purpose (pod kill, collector outage, burst, controller restart) and
    /// prove that no telemetry was lost or duplicated.
    Chaos(chaos::Args),
    /// Start a backend, run the sample agent pipeline, verify it and show its trace.
    Demo(demo::Args),
    /// Start the observability stack (Docker, or the embedded backend without Docker).
    Up(up::Args),
    /// Stop the stack that `obsctl up` started.
    Down(down::Args),
    /// Show the state and health of each stack component.
    Status(status::Args),
}

/// An error that carries the exit code the command documents for it (for example 2 for
/// invalid input); any other error exits 1.
#[derive(Debug, thiserror::Error)]
// The field is not named `source`: thiserror would then report the inner error as this error's
// cause too, and `{:#}` would print its message twice.
#[error("{inner:#}")]
pub struct CommandError {
    pub code: u8,
    inner: anyhow::Error,
}

impl CommandError {
    pub fn new(code: u8, source: impl Into<anyhow::Error>) -> Self {
        Self {
            code,
            inner: source.into(),
        }
    }
}

/// Parses the command line, exiting on a usage error. Usage errors exit 2, as clap's do, except
/// for `verify` and `demo`, whose exit code 2 means "a check failed": theirs exit 1 ("could not
/// run"), so that CI can tell a broken invocation from a failed verification.
pub fn parse_or_exit() -> Cli {
    match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            let args: Vec<String> = std::env::args().skip(1).collect();
            let code = if !err.use_stderr() {
                0
            } else {
                usage_exit_code(&args)
            };
            // Printing can only fail when stderr is gone; the exit code still tells.
            let _ = err.print();
            std::process::exit(code);
        }
    }
}

/// The exit code for a usage error, from the subcommand named on the command line (the first
/// argument that is not a flag: the only global flag, `-v`, takes no value).
fn usage_exit_code(args: &[String]) -> i32 {
    match args
        .iter()
        .find(|a| !a.starts_with('-'))
        .map(String::as_str)
    {
        Some("verify" | "demo" | "chaos") => 1,
        _ => 2,
    }
}

pub fn dispatch(cli: Cli) -> ExitCode {
    crate::ui::set_verbosity(cli.verbose);
    let result = match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Shim(args) => shim::run(args),
        Command::Relay(args) => relay::run(args),
        Command::Flush(args) => flush::run(args),
        Command::Run(args) => run::run(args),
        Command::Instrument(args) => instrument::run(args),
        Command::Runs(args) => runs::run(args),
        Command::Verify(args) => verify::run(args),
        Command::Trace(args) => trace::run(args),
        Command::Chaos(args) => chaos::run(args),
        Command::Demo(args) => demo::run(args),
        Command::Up(args) => up::run(args),
        Command::Down(args) => down::run(args),
        Command::Status(args) => status::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            let (code, shown) = match err.downcast_ref::<CommandError>() {
                Some(command_error) => (command_error.code, &command_error.inner),
                None => (1, &err),
            };
            eprintln!("obsctl: error: {}", render_chain(shown));
            ExitCode::from(code)
        }
    }
}

/// The error and its causes joined by `: `, skipping a cause whose text the message before it
/// already ends with: many error types quote their source in their own message.
fn render_chain(err: &anyhow::Error) -> String {
    let mut rendered = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if rendered.ends_with(&text) {
            continue;
        }
        if !rendered.is_empty() {
            rendered.push_str(": ");
        }
        rendered.push_str(&text);
    }
    rendered
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_errors_of_verify_and_demo_exit_1_others_2() {
        let args = |line: &str| line.split(' ').map(String::from).collect::<Vec<_>>();
        assert_eq!(usage_exit_code(&args("-v verify --bogus")), 1);
        assert_eq!(usage_exit_code(&args("demo --timeout x")), 1);
        assert_eq!(usage_exit_code(&args("run --bogus")), 2);
        assert_eq!(usage_exit_code(&args("--bogus")), 2);
    }

    #[test]
    fn every_duration_flag_takes_the_one_syntax() {
        use clap::CommandFactory;
        let mut flags: Vec<(String, String)> = Vec::new();
        for sub in Cli::command().get_subcommands() {
            for arg in sub.get_arguments() {
                let named_duration = arg
                    .get_value_names()
                    .is_some_and(|names| names.iter().any(|n| n == "DURATION"));
                if named_duration {
                    let long = arg.get_long().expect("duration flags are long flags");
                    flags.push((sub.get_name().to_string(), format!("--{long}")));
                }
            }
        }
        let names: Vec<String> = flags.iter().map(|(s, f)| format!("{s} {f}")).collect();
        for expected in [
            "up --timeout",
            "flush --timeout",
            "verify --timeout",
            "verify --since",
            "demo --timeout",
            "shim --export-budget",
            "chaos --outage",
            "chaos --timeout",
        ] {
            assert!(
                names.iter().any(|n| n == expected),
                "{expected} in {names:?}"
            );
        }
        for (sub, flag) in &flags {
            // The shim needs a command or --check besides.
            let line = |text: &str| {
                let mut line = vec!["obsctl", sub, flag, text];
                if sub == "shim" {
                    line.push("--check");
                }
                Cli::try_parse_from(line)
            };
            for text in ["1m30s", "500ms", "10s", "7"] {
                let parsed = line(text);
                assert!(parsed.is_ok(), "{sub} {flag} {text}: {:?}", parsed.err());
            }
            assert!(line("soon").is_err());
        }
        let Command::Flush(flush) = Cli::try_parse_from(["obsctl", "flush", "--timeout", "1m30s"])
            .unwrap()
            .command
        else {
            panic!("flush parses as flush");
        };
        assert_eq!(flush.timeout, std::time::Duration::from_secs(90));
    }

    #[test]
    fn a_cause_quoted_by_its_parent_is_printed_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let err = anyhow::Error::new(io).context("cannot read a.yaml: no such file");
        let err = err.context("loading the workflow");
        assert_eq!(
            render_chain(&err),
            "loading the workflow: cannot read a.yaml: no such file"
        );
    }
}
