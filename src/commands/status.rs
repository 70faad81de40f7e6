//! `obsctl status`: argument handling and output only; the work is in `stack::runtime`.

use std::process::ExitCode;

use anyhow::Context;

use crate::stack::runtime;

/// `status` exits with this when the stack is down or any component is not ready.
pub const EXIT_NOT_HEALTHY: u8 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Table,
    Json,
}

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Exit codes: 0 every component ready; 3 nothing up or a component not \
ready; 2 invalid project name; 1 error."
)]
pub struct Args {
    /// The project `obsctl up` was given.
    #[arg(long, default_value = crate::stack::docker::DEFAULT_PROJECT, env = "OBSCTL_PROJECT")]
    pub project: String,

    /// Output format.
    #[arg(short, long, value_enum, default_value = "table")]
    pub output: Output,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let report = rt.block_on(runtime::status(&args.project)).map_err(|e| {
        let code = match e {
            runtime::RuntimeError::Docker(crate::stack::docker::DockerError::BadProject(_)) => 2,
            _ => 1,
        };
        crate::commands::CommandError::new(code, e)
    })?;
    match args.output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&report).context("encoding status")?
        ),
        Output::Table => {
            let mut table = crate::report::table(
                ["component", "state", "health", "image", "probe"],
                crate::ui::color_enabled(),
            );
            for c in &report.components {
                table.add_row([
                    c.component.to_string(),
                    c.state.clone(),
                    if c.ready {
                        "ready".into()
                    } else {
                        format!("not ready: {}", c.detail.clone().unwrap_or_default())
                    },
                    c.image.clone().unwrap_or_default(),
                    c.url.clone().unwrap_or_default(),
                ]);
            }
            if let Some(e) = &report.embedded {
                table.add_row([
                    "embedded".to_string(),
                    format!("running (pid {})", e.pid),
                    if e.ready {
                        "ready".into()
                    } else {
                        format!("not ready: {}", e.detail.clone().unwrap_or_default())
                    },
                    "obsctl serve".into(),
                    e.url.clone(),
                ]);
            }
            if report.components.is_empty() && report.embedded.is_none() {
                println!(
                    "no stack is up for project {}",
                    crate::ui::quoted(&report.project)
                );
            } else {
                println!("{table}");
            }
            if let Some(why) = &report.docker_unreachable {
                crate::ui::debug(1, format!("Docker not checked: {why}"));
            }
        }
    }
    Ok(if report.healthy() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_NOT_HEALTHY)
    })
}
