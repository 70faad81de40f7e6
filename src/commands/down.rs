//! `obsctl down`: argument handling and output only; the work is in `stack::runtime`.

use std::process::ExitCode;

use anyhow::Context;

use crate::stack::runtime;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Also remove the stack's data volumes (traces, logs, metrics, Grafana state, queues).
    #[arg(long)]
    pub volumes: bool,

    /// The project `obsctl up` was given.
    #[arg(long, default_value = crate::stack::docker::DEFAULT_PROJECT, env = "OBSCTL_PROJECT")]
    pub project: String,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let report = rt
        .block_on(runtime::down(&args.project, args.volumes))
        .map_err(|e| {
            let code = match e {
                runtime::RuntimeError::Docker(crate::stack::docker::DockerError::BadProject(_)) => {
                    2
                }
                _ => 1,
            };
            crate::commands::CommandError::new(code, e)
        })?;
    if let Some(pid) = report.stopped_embedded {
        println!("stopped embedded backend (pid {pid})");
    }
    for item in &report.removed {
        println!("removed {item}");
    }
    if report.stopped_embedded.is_none() && report.removed.is_empty() {
        println!(
            "nothing to stop for project {}",
            crate::ui::quoted(&args.project)
        );
    }
    if let Some(why) = report.docker_skipped {
        crate::ui::debug(1, format!("Docker not checked: {why}"));
    }
    Ok(ExitCode::SUCCESS)
}
