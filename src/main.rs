//! The `obsctl` binary: parses the command line and hands over to `obsctl::commands`.
//! Everything else lives in the library so that tests and benches can reach it.

use std::process::ExitCode;

fn main() -> ExitCode {
    obsctl::tls::install_default_provider();
    let cli = obsctl::commands::parse_or_exit();
    obsctl::commands::dispatch(cli)
}
