//! The embedded backend as a background process: `obsctl up --runtime embedded` starts
//! `obsctl serve` detached (own process group, log file and pid file under the state directory)
//! and `obsctl down` stops it with SIGTERM, so the stack outlives the command that started it.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::config::StackConfig;
use super::definition::Port;
use super::endpoints::Endpoints;
use super::ready::{self, NotReady, Target};

#[derive(Debug, thiserror::Error)]
pub enum BackgroundError {
    #[error("cannot start `obsctl serve` ({exe}): {source}")]
    Spawn {
        exe: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}\nlast lines of {1}:\n{2}")]
    NotReady(Box<NotReady>, PathBuf, String),
    #[error("cannot write {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("`obsctl serve` (pid {0}) did not stop within {1:?} of SIGTERM")]
    StopTimeout(u32, Duration),
}

pub fn pid_path() -> PathBuf {
    crate::paths::state_home().join("serve.pid")
}

pub fn log_path() -> PathBuf {
    crate::paths::state_home().join("serve.log")
}

/// The pid in the pid file, when that process is still an `obsctl serve`.
pub fn running_pid() -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(pid_path())
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    let is_serve = args.iter().any(|a| *a == b"serve");
    let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit(')')
                .next()
                .map(|r| r.trim_start().starts_with('Z'))
        })
        .unwrap_or(true);
    (is_serve && !zombie).then_some(pid)
}

/// The endpoints the embedded backend answers on with this config: OTLP on the collector's
/// ports, every query API on the Tempo port.
pub fn endpoints(config: &StackConfig, pid: u32) -> Endpoints {
    let addr = |p: Port| format!("127.0.0.1:{}", config.port(p));
    let mut e = Endpoints::embedded(
        &addr(Port::OtlpGrpc),
        &addr(Port::OtlpHttp),
        &addr(Port::Tempo),
    );
    e.pid = Some(pid);
    e
}

/// Starts `obsctl serve` in the background unless one is already running, waits for `/ready`,
/// and records the endpoints. Returns the pid and whether it was already running.
pub async fn up(config: &StackConfig, timeout: Duration) -> Result<(u32, bool), BackgroundError> {
    let api = format!("127.0.0.1:{}", config.port(Port::Tempo));
    let target = Target {
        name: "embedded".into(),
        url: format!("http://{api}/ready"),
    };
    if let Some(pid) = running_pid() {
        let probe = ready::probe(&ready::client(), &target.url).await;
        if probe.is_ok() {
            return Ok((pid, true));
        }
    }
    let exe = std::env::current_exe().map_err(|source| BackgroundError::Spawn {
        exe: PathBuf::from("obsctl"),
        source,
    })?;
    let log = log_path();
    let io = |path: &PathBuf| {
        let path = path.clone();
        move |source| BackgroundError::Io { path, source }
    };
    std::fs::create_dir_all(crate::paths::state_home()).map_err(io(&log))?;
    let out = std::fs::File::create(&log).map_err(io(&log))?;
    let err = out.try_clone().map_err(io(&log))?;
    use std::os::unix::process::CommandExt;
    let child = Command::new(&exe)
        .arg("serve")
        .arg("--otlp-grpc")
        .arg(format!("127.0.0.1:{}", config.port(Port::OtlpGrpc)))
        .arg("--otlp-http")
        .arg(format!("127.0.0.1:{}", config.port(Port::OtlpHttp)))
        .arg("--api")
        .arg(&api)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .spawn()
        .map_err(|source| BackgroundError::Spawn {
            exe: exe.clone(),
            source,
        })?;
    let pid = child.id();
    // Reaped by nobody on purpose: the server outlives this command; `down` stops it.
    drop(child);
    let pid_file = pid_path();
    std::fs::write(&pid_file, pid.to_string()).map_err(io(&pid_file))?;
    let waited = ready::wait_all(std::slice::from_ref(&target), timeout, |_| async move {
        (!std::path::Path::new(&format!("/proc/{pid}")).exists() || running_pid().is_none())
            .then(|| "process exited".to_string())
    })
    .await;
    if let Err(not_ready) = waited {
        stop(pid, Duration::from_secs(5)).ok();
        let _ = std::fs::remove_file(&pid_file);
        return Err(BackgroundError::NotReady(
            Box::new(not_ready),
            log.clone(),
            tail(&log, 20),
        ));
    }
    let path = Endpoints::default_path();
    endpoints(config, pid).save(&path).map_err(io(&path))?;
    Ok((pid, false))
}

/// Sends SIGTERM and waits for the process to exit.
pub fn stop(pid: u32, grace: Duration) -> Result<(), BackgroundError> {
    let target = Pid::from_raw(pid as i32);
    if kill(target, Signal::SIGTERM).is_err() {
        return Ok(());
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        let gone = !std::path::Path::new(&format!("/proc/{pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    s.rsplit(')')
                        .next()
                        .map(|r| r.trim_start().starts_with('Z'))
                })
                .unwrap_or(true);
        if gone {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(BackgroundError::StopTimeout(pid, grace))
}

/// Stops the background server (if any) and removes its pid and endpoints files. Returns the
/// pid that was stopped.
pub fn down() -> Result<Option<u32>, BackgroundError> {
    let pid = running_pid();
    if let Some(pid) = pid {
        stop(pid, Duration::from_secs(15))?;
    }
    let _ = std::fs::remove_file(pid_path());
    let path = Endpoints::default_path();
    if Endpoints::load(&path).is_some_and(|e| e.runtime == super::endpoints::Runtime::Embedded) {
        let _ = std::fs::remove_file(&path);
    }
    Ok(pid)
}

/// The last `n` lines of a file.
pub fn tail(path: &std::path::Path, n: usize) -> String {
    let body = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = body.lines().collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| format!("    {l}\n"))
        .collect()
}
