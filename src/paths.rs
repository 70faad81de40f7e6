//! Default locations of obsctl's on-disk state, following the XDG base directory spec so that
//! nothing lands in the working directory unless the user asks for it.

use std::path::PathBuf;

/// `$XDG_STATE_HOME/obsctl`, else `~/.local/state/obsctl`, else `./.obsctl` when there is no home.
pub fn state_home() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("obsctl");
    }
    match std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        Some(home) => PathBuf::from(home).join(".local/state/obsctl"),
        None => PathBuf::from(".obsctl"),
    }
}

/// Where `obsctl serve` keeps its database unless `--data-dir` says otherwise.
pub fn default_data_dir() -> PathBuf {
    state_home().join("data")
}

/// Where `obsctl run` records runs unless `--state-dir` says otherwise.
pub fn default_state_dir() -> PathBuf {
    state_home().join("runs")
}

/// Where the shim spools undelivered telemetry unless `OBSCTL_SPOOL_DIR` says otherwise.
pub fn default_spool_dir() -> PathBuf {
    state_home().join("spool")
}
