//! The embedded backend as a background process: `obsctl up --runtime embedded` starts
//! `obsctl serve` detached (own process group, log file and pid file under the state directory)
//! and `obsctl down` stops it with SIGTERM, so the stack outlives the command that started it.
//! The pid file also names the project it was started for: `--project` means the same for this
//! runtime as for Docker, and `down --project P` stops only P's backend.

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

/// The ports the embedded backend listens on: OTLP on the collector's, every query API on
/// Tempo's.
pub const PORTS: [Port; 3] = [Port::OtlpGrpc, Port::OtlpHttp, Port::Tempo];

/// The running background backend: its pid and the project it was started for.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Running {
    pub pid: u32,
    pub project: String,
}

/// The pid file's backend, when that process is still an `obsctl serve`.
pub fn running() -> Option<Running> {
    let text = std::fs::read_to_string(pid_path()).ok()?;
    let mut lines = text.lines();
    let pid: u32 = lines.next()?.trim().parse().ok()?;
    // A pid file from before projects were recorded: the default project's.
    let project = lines
        .next()
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map_or_else(
            || super::docker::DEFAULT_PROJECT.to_string(),
            str::to_string,
        );
    is_serve(pid).then_some(Running { pid, project })
}

/// The pid of the running background backend, whatever its project.
pub fn running_pid() -> Option<u32> {
    running().map(|r| r.pid)
}

/// The running background backend when it belongs to `project`.
pub fn running_for(project: &str) -> Option<u32> {
    running().filter(|r| r.project == project).map(|r| r.pid)
}

/// Whether `pid` is a live (not zombie) `obsctl serve`.
fn is_serve(pid: u32) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let is_serve = cmdline.split(|b| *b == 0).any(|a| a == b"serve");
    is_serve && !zombie_or_gone(pid)
}

fn zombie_or_gone(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit(')')
                .next()
                .map(|r| r.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
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

/// Whether the query API of this config answers `/ready`.
pub async fn answers(config: &StackConfig) -> bool {
    ready::probe(&ready::client(), &ready_url(config))
        .await
        .is_ok()
}

fn ready_url(config: &StackConfig) -> String {
    format!("http://127.0.0.1:{}/ready", config.port(Port::Tempo))
}

/// The listener lines `obsctl serve` prints once it has bound every address (`otlp-grpc ADDR`,
/// `otlp-http ADDR`, `api ADDR`), as they must read for this config.
fn banner(config: &StackConfig) -> [String; 3] {
    let line = |name: &str, p: Port| format!("{name} 127.0.0.1:{}", config.port(p));
    [
        line("otlp-grpc", Port::OtlpGrpc),
        line("otlp-http", Port::OtlpHttp),
        line("api", Port::Tempo),
    ]
}

/// Starts `obsctl serve` in the background and waits until it is ready, then records the
/// endpoints. Ready means the process obsctl started is alive, has printed that it listens on
/// every address of this config, and answers `/ready`: a probe alone could be answered by
/// whatever else holds the API port. Returns the pid.
pub async fn start(
    config: &StackConfig,
    project: &str,
    timeout: Duration,
) -> Result<u32, BackgroundError> {
    let target = Target {
        name: "embedded".into(),
        url: ready_url(config),
    };
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
    let mut child = Command::new(&exe)
        .arg("serve")
        .arg("--otlp-grpc")
        .arg(format!("127.0.0.1:{}", config.port(Port::OtlpGrpc)))
        .arg("--otlp-http")
        .arg(format!("127.0.0.1:{}", config.port(Port::OtlpHttp)))
        .arg("--api")
        .arg(format!("127.0.0.1:{}", config.port(Port::Tempo)))
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
    crate::ui::debug(
        1,
        format!("started `obsctl serve` (pid {pid}, log {})", log.display()),
    );
    let pid_file = pid_path();
    std::fs::write(&pid_file, format!("{pid}\n{project}\n")).map_err(io(&pid_file))?;
    let started = Instant::now();
    let want = banner(config);
    let mut said_waiting = false;
    let listening = loop {
        let body = std::fs::read_to_string(&log).unwrap_or_default();
        if want.iter().all(|w| body.lines().any(|l| l == w)) {
            crate::ui::debug(
                1,
                format!(
                    "`obsctl serve` listens ({}); probing {}",
                    want.join(", "),
                    target.url
                ),
            );
            break Ok(());
        }
        // Binding takes milliseconds; a wait past a second is worth a word.
        if !said_waiting && started.elapsed() >= Duration::from_secs(1) {
            crate::ui::note(format!(
                "waiting for `obsctl serve` (pid {pid}) to listen on its addresses"
            ));
            said_waiting = true;
        }
        // The child itself, not /proc: right after the spawn its command line may not read
        // `serve` yet.
        let state = if child.try_wait().is_ok_and(|status| status.is_some()) {
            Some("process exited")
        } else if started.elapsed() >= timeout {
            Some("running, has not bound its addresses")
        } else {
            None
        };
        if let Some(state) = state {
            break Err(NotReady {
                name: target.name.clone(),
                url: target.url.clone(),
                state: state.into(),
                last: "not probed: the process has not announced its listeners".into(),
                waited: started.elapsed(),
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let child = std::sync::Mutex::new(child);
    let exited = || {
        let mut child = child.lock().expect("not poisoned");
        child.try_wait().is_ok_and(|status| status.is_some())
    };
    let waited = match listening {
        Ok(()) => ready::wait_all(
            std::slice::from_ref(&target),
            timeout.saturating_sub(started.elapsed()),
            |_| {
                let gone = exited();
                async move { gone.then(|| "process exited".to_string()) }
            },
        )
        .await
        .map(|_| ()),
        Err(not_ready) => Err(not_ready),
    };
    // Not waited for on success, on purpose: the server outlives this command; `down` stops it.
    drop(child);
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
    crate::ui::debug(1, format!("recorded the endpoints in {}", path.display()));
    Ok(pid)
}

/// Sends SIGTERM and waits for the process to exit.
pub fn stop(pid: u32, grace: Duration) -> Result<(), BackgroundError> {
    let target = Pid::from_raw(pid as i32);
    if kill(target, Signal::SIGTERM).is_err() {
        return Ok(());
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if zombie_or_gone(pid) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(BackgroundError::StopTimeout(pid, grace))
}

/// Stops the background server of `project` (if any) and removes its pid and endpoints files.
/// Returns the pid that was stopped; another project's server is left running.
pub fn down(project: &str) -> Result<Option<u32>, BackgroundError> {
    if running().is_some_and(|r| r.project != project) {
        return Ok(None);
    }
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
