//! How one Pod step runs. The executor only talks to the [`Runner`] trait; [`ProcessRunner`]
//! runs the step as a local process (through `obsctl shim`, in its own process group, with a
//! private `/tmp`), and a Docker runner or an Argo Server submitter can implement the same trait.

use std::collections::HashMap;
use std::ffi::CString;
use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::otlp::{SpanId, TraceId};

/// Everything a runner needs to start one Pod step, already resolved (no `{{...}}` left).
#[derive(Debug, Clone)]
pub struct StepSpec {
    pub node_id: String,
    pub node_name: String,
    pub template_name: String,
    pub agent: String,
    pub step: String,
    /// The container image the template names; the process runner ignores it.
    pub image: String,
    /// `command` followed by `args`; for a script template, the script's path is appended.
    pub argv: Vec<String>,
    /// Environment on top of the runner's own: obsctl's (OTEL, correlation, TRACEPARENT) first,
    /// then the template's `env`, so a template may override.
    pub env: Vec<(String, String)>,
    pub working_dir: Option<String>,
    /// A script template's `source`.
    pub script: Option<String>,
    /// Absolute paths (under `/tmp`) whose content the executor wants after the step exits.
    pub output_paths: Vec<String>,
    /// A directory on the host that belongs to this step alone (logs, private `/tmp`).
    pub work_dir: PathBuf,
}

/// The first line `obsctl shim` prints: the ids of the step's span.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ShimStart {
    pub trace_id: TraceId,
    pub span_id: SpanId,
}

impl ShimStart {
    /// `None` when `line` is not the shim's JSON line (then it is ordinary output).
    pub fn parse(line: &str) -> Option<Self> {
        #[derive(Deserialize)]
        struct Raw {
            trace_id: String,
            span_id: String,
        }
        let raw: Raw = serde_json::from_str(line.trim()).ok()?;
        Some(Self {
            trace_id: TraceId::from_hex(&raw.trace_id).ok()?,
            span_id: SpanId::from_hex(&raw.span_id).ok()?,
        })
    }
}

/// How a step ended.
#[derive(Debug, Clone, Default)]
pub struct StepExit {
    /// The exit code, or 128+N when signal N ended the process (as a container runtime reports).
    pub exit_code: i32,
    /// The step's stdout without the shim's first line, at most [`MAX_RESULT`] bytes.
    pub stdout: String,
    /// Content of each requested output path, `None` when the step did not write it.
    pub files: HashMap<String, Option<String>>,
}

/// Argo caps `outputs.result` too; a chatty step must not grow obsctl's memory without bound.
pub const MAX_RESULT: usize = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    #[error("cannot prepare {path}: {source}")]
    Prepare {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot start {program:?}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("waiting for the step failed: {0}")]
    Wait(std::io::Error),
    #[error("the step has an empty command")]
    EmptyCommand,
}

/// Starts Pod steps. One runner serves a whole run; `start` is called once per attempt.
pub trait Runner: Send + Sync + 'static {
    type Handle: StepHandle;
    fn start(&self, spec: StepSpec) -> Result<Self::Handle, RunnerError>;
}

/// A started step. `wait` is cancel-safe, so the executor can race it against a deadline,
/// call `terminate`/`kill`, and wait again.
pub trait StepHandle: Send + 'static {
    /// The shim's first line, delivered once when the step prints it (`None` if it does not).
    /// Taken once, so the executor can await it alongside `wait`.
    fn take_telemetry(&mut self) -> Option<tokio::sync::oneshot::Receiver<Option<ShimStart>>>;
    fn wait(&mut self) -> impl Future<Output = Result<StepExit, RunnerError>> + Send;
    /// Asks the step to stop (SIGTERM), as Kubernetes does before its grace period ends.
    fn terminate(&self);
    /// Stops the step now (SIGKILL).
    fn kill(&self);
    /// The OS process group, recorded so that a resumed run can stop leftovers.
    fn process_group(&self) -> Option<i32>;
}

/// Runs each step as `<obsctl> shim --agent A --step S -- argv...` (or `argv` alone without a
/// shim), in a new process group, killed if obsctl dies, with a private `/tmp` when the kernel
/// allows a mount namespace.
#[derive(Debug, Clone)]
pub struct ProcessRunner {
    shim: Option<PathBuf>,
    private_tmp: bool,
}

impl ProcessRunner {
    /// `shim`: the obsctl executable to wrap each step with, or `None` to run steps bare.
    pub fn new(shim: Option<PathBuf>) -> Self {
        Self {
            shim,
            private_tmp: private_tmp_available(),
        }
    }

    /// Whether each step sees its own `/tmp`; when false, the executor refuses workflows that
    /// read output files, rather than let parallel steps overwrite each other's.
    pub fn private_tmp(&self) -> bool {
        self.private_tmp
    }
}

/// Probes once whether a child may unshare its mount namespace and bind a directory on `/tmp`.
pub fn private_tmp_available() -> bool {
    static PROBE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *PROBE.get_or_init(|| {
        let Ok(dir) = tempdir_for_probe() else {
            return false;
        };
        let Ok(isolation) = Isolation::new(Some(&dir)) else {
            return false;
        };
        let mut cmd = std::process::Command::new("/bin/sh");
        cmd.args(["-c", "test ! -e /tmp/.obsctl-probe-outside"]);
        let marker = std::env::temp_dir().join(".obsctl-probe-outside");
        let _ = std::fs::write(&marker, b"");
        // SAFETY: the closure only makes async-signal-safe system calls on data prepared
        // before the fork.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || isolation.apply());
        }
        let ok = cmd.status().map(|s| s.success()).unwrap_or(false);
        let _ = std::fs::remove_file(&marker);
        let _ = std::fs::remove_dir_all(&dir);
        ok
    })
}

fn tempdir_for_probe() -> std::io::Result<PathBuf> {
    let dir = crate::paths::state_home().join(format!("probe-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// What the child does between fork and exec. Paths are converted before the fork, because
/// allocating afterwards is not async-signal-safe.
struct Isolation {
    tmp: Option<CString>,
    parent: i32,
}

impl Isolation {
    fn new(private_tmp: Option<&Path>) -> std::io::Result<Self> {
        let tmp = private_tmp
            .map(|p| CString::new(p.as_os_str().as_encoded_bytes()))
            .transpose()
            .map_err(std::io::Error::other)?;
        Ok(Self {
            tmp,
            parent: std::process::id() as i32,
        })
    }

    fn apply(&self) -> std::io::Result<()> {
        use nix::mount::{MsFlags, mount};
        // Orphaned steps must not run forever after a kill -9 of obsctl.
        nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
        if nix::unistd::getppid().as_raw() != self.parent {
            return Err(std::io::Error::other(
                "obsctl exited before the step started",
            ));
        }
        if let Some(tmp) = &self.tmp {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)?;
            mount(
                None::<&str>,
                "/",
                None::<&str>,
                MsFlags::MS_REC | MsFlags::MS_PRIVATE,
                None::<&str>,
            )?;
            mount(
                Some(tmp.as_c_str()),
                "/tmp",
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )?;
        }
        Ok(())
    }
}

/// Where the process runner keeps a step's private `/tmp` on the host.
pub fn private_tmp_dir(work_dir: &Path) -> PathBuf {
    work_dir.join("tmp")
}

impl Runner for ProcessRunner {
    type Handle = ProcessHandle;

    fn start(&self, spec: StepSpec) -> Result<ProcessHandle, RunnerError> {
        let prepare = |path: &Path| {
            let path = path.to_path_buf();
            move |source| RunnerError::Prepare { path, source }
        };
        let tmp = private_tmp_dir(&spec.work_dir);
        std::fs::create_dir_all(&tmp).map_err(prepare(&tmp))?;
        let mut argv = spec.argv.clone();
        if let Some(source) = &spec.script {
            // Argo stages the script in a file and appends its path to the command.
            let host = tmp.join(".argo-script");
            std::fs::write(&host, source).map_err(prepare(&host))?;
            std::fs::set_permissions(&host, std::fs::Permissions::from_mode(0o755))
                .map_err(prepare(&host))?;
            argv.push(if self.private_tmp {
                "/tmp/.argo-script".to_string()
            } else {
                host.display().to_string()
            });
        }
        if argv.is_empty() {
            return Err(RunnerError::EmptyCommand);
        }
        let mut full = Vec::new();
        if let Some(shim) = &self.shim {
            full.push(shim.display().to_string());
            full.extend([
                "shim".to_string(),
                "--agent".to_string(),
                spec.agent.clone(),
                "--step".to_string(),
                spec.step.clone(),
                "--".to_string(),
            ]);
        }
        full.extend(argv);
        let log_path = spec.work_dir.join("log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(prepare(&log_path))?;
        let isolation =
            Isolation::new(self.private_tmp.then_some(tmp.as_path())).map_err(prepare(&tmp))?;
        let mut cmd = tokio::process::Command::new(&full[0]);
        cmd.args(&full[1..])
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log.try_clone().map_err(prepare(&log_path))?)
            .process_group(0)
            .kill_on_drop(true);
        if let Some(dir) = &spec.working_dir {
            cmd.current_dir(dir);
        }
        // SAFETY: `apply` only makes system calls on data prepared before the fork.
        unsafe {
            cmd.pre_exec(move || isolation.apply());
        }
        let mut child = cmd.spawn().map_err(|source| RunnerError::Spawn {
            program: full[0].clone(),
            source,
        })?;
        let pgid = child.id().map(|p| p as i32);
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tel_tx, tel_rx) = tokio::sync::oneshot::channel();
        let expect_shim = self.shim.is_some();
        let echo = crate::ui::verbosity() >= 2;
        let label = spec.node_name.clone();
        let reader = tokio::spawn(async move {
            let mut log = tokio::fs::File::from_std(log);
            let mut lines = BufReader::new(stdout).lines();
            let mut captured = String::new();
            let mut tel_tx = Some(tel_tx);
            let mut first = true;
            while let Ok(Some(line)) = lines.next_line().await {
                if first {
                    first = false;
                    if expect_shim && let Some(start) = ShimStart::parse(&line) {
                        if let Some(tx) = tel_tx.take() {
                            let _ = tx.send(Some(start));
                        }
                        continue;
                    }
                }
                if let Some(tx) = tel_tx.take() {
                    let _ = tx.send(None);
                }
                if echo {
                    eprintln!("{label}: {line}");
                }
                let _ = log.write_all(line.as_bytes()).await;
                let _ = log.write_all(b"\n").await;
                if captured.len() + line.len() < MAX_RESULT {
                    captured.push_str(&line);
                    captured.push('\n');
                }
            }
            let _ = log.flush().await;
            captured
        });
        Ok(ProcessHandle {
            child,
            pgid,
            reader: Some(reader),
            telemetry: Some(tel_rx),
            exit: None,
            stdout: String::new(),
            output_paths: spec.output_paths,
            tmp,
            private_tmp: self.private_tmp,
        })
    }
}

pub struct ProcessHandle {
    child: tokio::process::Child,
    pgid: Option<i32>,
    reader: Option<tokio::task::JoinHandle<String>>,
    telemetry: Option<tokio::sync::oneshot::Receiver<Option<ShimStart>>>,
    exit: Option<i32>,
    stdout: String,
    output_paths: Vec<String>,
    tmp: PathBuf,
    private_tmp: bool,
}

impl ProcessHandle {
    fn signal(&self, signal: Signal) {
        if let Some(pgid) = self.pgid {
            let _ = killpg(Pid::from_raw(pgid), signal);
        }
    }

    fn read_outputs(&self) -> HashMap<String, Option<String>> {
        self.output_paths
            .iter()
            .map(|path| {
                let host = if self.private_tmp {
                    self.tmp.join(path.trim_start_matches("/tmp/"))
                } else {
                    PathBuf::from(path)
                };
                (path.clone(), std::fs::read_to_string(host).ok())
            })
            .collect()
    }
}

impl StepHandle for ProcessHandle {
    fn take_telemetry(&mut self) -> Option<tokio::sync::oneshot::Receiver<Option<ShimStart>>> {
        self.telemetry.take()
    }

    async fn wait(&mut self) -> Result<StepExit, RunnerError> {
        use std::os::unix::process::ExitStatusExt;
        let code = match self.exit {
            Some(code) => code,
            None => {
                let status = self.child.wait().await.map_err(RunnerError::Wait)?;
                let code = status
                    .code()
                    .or_else(|| status.signal().map(|s| 128 + s))
                    .unwrap_or(1);
                self.exit = Some(code);
                // Whatever the shim left behind in its group goes with it, as a pod's
                // containers go with the pod.
                self.signal(Signal::SIGKILL);
                code
            }
        };
        if let Some(reader) = &mut self.reader {
            self.stdout = reader.await.unwrap_or_default();
            self.reader = None;
        }
        Ok(StepExit {
            exit_code: code,
            stdout: std::mem::take(&mut self.stdout),
            files: self.read_outputs(),
        })
    }

    fn terminate(&self) {
        self.signal(Signal::SIGTERM);
    }

    fn kill(&self) {
        self.signal(Signal::SIGKILL);
    }

    fn process_group(&self) -> Option<i32> {
        self.pgid
    }
}

/// Stops a process group left by an interrupted run, if a process of that group still runs
/// for that run's node (checked through its environment, so a reused id is never hit). The
/// group leader (the shim) is gone already, killed with obsctl; its step may not be.
pub fn kill_leftover(pgid: i32, node_id: &str) {
    let needle = format!("{}={node_id}", crate::conventions::env::ARGO_NODE_ID);
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return;
    };
    let belongs = procs.flatten().any(|entry| {
        let pid = entry.file_name();
        let Some(pid) = pid
            .to_str()
            .filter(|p| p.bytes().all(|b| b.is_ascii_digit()))
        else {
            return false;
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Fields after the parenthesised command: state, ppid, pgrp.
        let pgrp = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(2))
            .and_then(|p| p.parse::<i32>().ok());
        pgrp == Some(pgid)
            && std::fs::read(format!("/proc/{pid}/environ"))
                .unwrap_or_default()
                .split(|b| *b == 0)
                .any(|var| var == needle.as_bytes())
    });
    if belongs {
        let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
    }
}
