//! The `obsctl` binary: parses the command line and hands over to `obsctl::commands`.
//! Everything else lives in the library so that tests and benches can reach it.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = obsctl::commands::Cli::parse();
    obsctl::commands::dispatch(cli)
}
