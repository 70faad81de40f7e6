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
use std::io::Write;

use tokio::io::{AsyncBufReadExt, BufReader};

use crate::otlp::{SpanId, TraceId};

pub mod docker;

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
    /// A directory on the host that belongs to this step attempt alone: `tmp/` in it is the
    /// step's `/tmp`, `log` its stdout and stderr.
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

/// The last line `obsctl shim` prints when [`crate::conventions::env::OBSCTL_SHIM_END_LINE`] is set: its span's id,
/// after the telemetry was exported or spooled. A shim killed before that never prints it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShimEnd(pub SpanId);

impl ShimEnd {
    const KEY: &'static str = "obsctl_shim_end";

    /// The line, without its newline.
    pub fn line(self) -> String {
        format!("{{\"{}\":\"{}\"}}", Self::KEY, self.0.to_hex())
    }

    /// What comes before the end line when `line` ends with it (a step's last output may lack
    /// its newline), `None` when it does not.
    fn strip(self, line: &str) -> Option<&str> {
        line.strip_suffix(&self.line())
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
    /// The signal that ended the shim itself (not its step): a shim killed this way exported
    /// nothing, so the executor records the attempt from outside. `None` when the shim exited
    /// on its own, when the step ran without a shim, or when the runner cannot tell.
    pub shim_killed_by: Option<Signal>,
}

/// Argo caps `outputs.result` too; a chatty step must not grow obsctl's memory without bound.
pub const MAX_RESULT: usize = 256 * 1024;

/// What every runner does with the lines a step prints on stdout: the shim's first line becomes
/// the step's telemetry (sent once, `None` when the step did not start with one), every other
/// line is for the step's log and, up to [`MAX_RESULT`] bytes, its captured `outputs.result`.
pub struct StdoutLines {
    telemetry: Option<tokio::sync::oneshot::Sender<Option<ShimStart>>>,
    expect_shim: bool,
    /// The end line the shim prints, once its start line was seen, and whether it came.
    end: Option<ShimEnd>,
    ended: bool,
    first: bool,
    /// `-vv` echoes each line on stderr, prefixed with the node's name.
    echo_label: Option<String>,
    captured: String,
}

impl StdoutLines {
    pub fn new(
        label: &str,
        expect_shim: bool,
        telemetry: tokio::sync::oneshot::Sender<Option<ShimStart>>,
    ) -> Self {
        Self {
            telemetry: Some(telemetry),
            expect_shim,
            end: None,
            ended: false,
            first: true,
            echo_label: (crate::ui::verbosity() >= 2).then(|| label.to_string()),
            captured: String::new(),
        }
    }

    /// Takes one line (without its newline); `true` when the caller should write it to the log.
    pub fn line(&mut self, line: &str) -> bool {
        if std::mem::take(&mut self.first)
            && self.expect_shim
            && let Some(start) = ShimStart::parse(line)
        {
            self.end = Some(ShimEnd(start.span_id));
            if let Some(tx) = self.telemetry.take() {
                let _ = tx.send(Some(start));
            }
            return false;
        }
        let line = match self.end.and_then(|end| end.strip(line)) {
            Some(before) => {
                self.ended = true;
                if before.is_empty() {
                    return false;
                }
                before
            }
            None => line,
        };
        if let Some(tx) = self.telemetry.take() {
            let _ = tx.send(None);
        }
        if let Some(label) = &self.echo_label {
            eprintln!("{label}: {line}");
        }
        self.capture(line, true);
        true
    }

    /// Whether the shim printed its end line: it ran to its end, it was not killed.
    pub fn shim_ended(&self) -> bool {
        self.ended
    }

    /// Ends the stream; `rest` is a last line without a newline. Returns the captured stdout.
    pub fn finish(mut self, rest: &str) -> String {
        if !rest.is_empty() {
            self.capture(rest, false);
        }
        if let Some(tx) = self.telemetry.take() {
            let _ = tx.send(None);
        }
        self.captured
    }

    fn capture(&mut self, text: &str, newline: bool) {
        if self.captured.len() + text.len() < MAX_RESULT {
            self.captured.push_str(text);
            if newline {
                self.captured.push('\n');
            }
        }
    }
}

/// An I/O failure while preparing `path` for a step, as a `map_err` argument.
fn prepare(path: &Path) -> impl FnOnce(std::io::Error) -> RunnerError + use<> {
    let path = path.to_path_buf();
    move |source| RunnerError::Prepare { path, source }
}

/// The step's private `/tmp` on the host (created): bound on `/tmp` in its mount namespace or
/// container, or standing in for `/tmp` without one.
fn host_tmp(spec: &StepSpec) -> Result<PathBuf, RunnerError> {
    let tmp = spec.work_dir.join("tmp");
    std::fs::create_dir_all(&tmp).map_err(prepare(&tmp))?;
    Ok(tmp)
}

/// Stages an Argo script as Argo does: an executable file in the step's `/tmp`, whose path is
/// appended to the command. Returns its host path.
fn stage_script(tmp: &Path, text: &str) -> Result<PathBuf, RunnerError> {
    let host = tmp.join(".argo-script");
    std::fs::write(&host, text).map_err(prepare(&host))?;
    std::fs::set_permissions(&host, std::fs::Permissions::from_mode(0o755))
        .map_err(prepare(&host))?;
    Ok(host)
}

/// The step's log file, opened for appending: its stderr, and its stdout once read.
fn open_log(spec: &StepSpec) -> Result<(PathBuf, std::fs::File), RunnerError> {
    let path = spec.work_dir.join("log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(prepare(&path))?;
    Ok((path, log))
}

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
    #[error(
        "this system does not allow a private mount namespace per step (needs root or \
         CAP_SYS_ADMIN); use --tmp-isolation rewrite"
    )]
    NoNamespace,
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

/// How a step gets a `/tmp` of its own, so parallel steps never see each other's files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TmpIsolation {
    /// A private mount namespace with a per-step directory bound on `/tmp` (needs root or
    /// CAP_SYS_ADMIN); falls back to `rewrite` when the kernel refuses.
    Auto,
    /// The private mount namespace, or an error when the kernel refuses it.
    Namespace,
    /// `/tmp/` in the command, arguments, environment and script is rewritten to a per-step
    /// directory (and TMPDIR points there); paths built at run time are not caught.
    Rewrite,
}

impl TmpIsolation {
    /// What `auto` gives: the namespace when the kernel allows it, else `rewrite`, said once on
    /// stderr so that a user who sees rewritten paths knows why.
    fn auto() -> bool {
        static NOTED: std::sync::Once = std::sync::Once::new();
        let private = private_tmp_available();
        if !private {
            NOTED.call_once(|| {
                crate::ui::note(
                    "steps get no private /tmp (a mount namespace needs root or CAP_SYS_ADMIN): \
                     /tmp/ paths in their commands are rewritten to a directory per step",
                )
            });
        }
        private
    }
}

/// Runs each step as `<obsctl> shim --agent A --step S -- argv...` (or `argv` alone without a
/// shim), in a new process group, killed if obsctl dies, with a `/tmp` of its own.
#[derive(Debug, Clone)]
pub struct ProcessRunner {
    shim: Option<PathBuf>,
    private_tmp: bool,
}

impl ProcessRunner {
    /// `shim`: the obsctl executable to wrap each step with, or `None` to run steps bare;
    /// `/tmp` isolation `auto`.
    pub fn new(shim: Option<PathBuf>) -> Self {
        Self {
            shim,
            private_tmp: TmpIsolation::auto(),
        }
    }

    /// [`ProcessRunner::new`] with a chosen `/tmp` isolation.
    pub fn with_isolation(
        shim: Option<PathBuf>,
        isolation: TmpIsolation,
    ) -> Result<Self, RunnerError> {
        let private_tmp = match isolation {
            TmpIsolation::Auto => TmpIsolation::auto(),
            TmpIsolation::Namespace if private_tmp_available() => true,
            TmpIsolation::Namespace => return Err(RunnerError::NoNamespace),
            TmpIsolation::Rewrite => false,
        };
        Ok(Self { shim, private_tmp })
    }
}

/// Probes once whether a child may unshare its mount namespace and bind a directory on `/tmp`.
pub fn private_tmp_available() -> bool {
    static PROBE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *PROBE.get_or_init(|| {
        let Ok(dir) = tempdir_for_probe() else {
            return false;
        };
        let Ok(isolation) = Isolation::new(Some(&dir), Path::new("/bin/true"), None, false) else {
            return false;
        };
        // A marker in the real /tmp must be hidden from the child once it is isolated.
        let marker = std::env::temp_dir().join(format!(".obsctl-probe-{}", std::process::id()));
        let _ = std::fs::write(&marker, b"");
        let Ok(marker_c) = CString::new(marker.as_os_str().as_encoded_bytes()) else {
            return false;
        };
        // Fork without exec: cheaper than starting a program. SAFETY: the child only makes
        // async-signal-safe system calls on data prepared before the fork, then _exits.
        let ok = match unsafe { nix::unistd::fork() } {
            Ok(nix::unistd::ForkResult::Child) => {
                let hidden = isolation.apply().is_ok()
                    && nix::unistd::access(marker_c.as_c_str(), nix::unistd::AccessFlags::F_OK)
                        .is_err();
                // SAFETY: _exit ends the child without running the parent's exit handlers.
                unsafe { nix::libc::_exit(if hidden { 0 } else { 1 }) }
            }
            Ok(nix::unistd::ForkResult::Parent { child }) => matches!(
                nix::sys::wait::waitpid(child, None),
                Ok(nix::sys::wait::WaitStatus::Exited(_, 0))
            ),
            Err(_) => false,
        };
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
    /// The program, then the shim's spool directory: a fixed array, as the child may not
    /// allocate.
    keep: [Option<KeptPath>; 2],
    parent: i32,
    /// Enter `/tmp` once it is the step's own: the working directory of a step whose template
    /// names none (obsctl's own directory may be under the `/tmp` just covered).
    enter_tmp: bool,
}

/// A path under `/tmp` that the step must still see behind its private `/tmp`: the program it
/// execs (obsctl built in a checkout there, say) or the spool the shim writes to (a state
/// directory there). The child opens it before covering `/tmp` and binds it back at the same
/// path. The descriptor must be opened inside the new mount namespace: a bind from a mount of
/// the parent's namespace fails with EINVAL.
struct KeptPath {
    path: CString,
    /// The directories between `/tmp` and the path, outermost first, to create as mount points.
    dirs: Vec<CString>,
    is_dir: bool,
}

impl KeptPath {
    fn new(path: &Path, is_dir: bool) -> std::io::Result<Option<Self>> {
        let program = path;
        if !program.starts_with("/tmp") || program == Path::new("/tmp") {
            return Ok(None);
        }
        let c = |p: &Path| {
            CString::new(p.as_os_str().as_encoded_bytes()).map_err(std::io::Error::other)
        };
        let mut dirs: Vec<CString> = program
            .ancestors()
            .skip(1)
            .take_while(|dir| *dir != Path::new("/tmp"))
            .map(c)
            .collect::<Result<_, _>>()?;
        dirs.reverse();
        Ok(Some(Self {
            path: c(program)?,
            dirs,
            is_dir,
        }))
    }

    /// In the child, inside the new namespace, before `/tmp` is covered.
    fn open(&self) -> std::io::Result<std::os::fd::OwnedFd> {
        use nix::fcntl::{OFlag, open};
        Ok(open(
            self.path.as_c_str(),
            OFlag::O_PATH | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )?)
    }

    /// In the child, after `/tmp` was covered; only system calls and stack buffers.
    fn bind(&self, held: &std::os::fd::OwnedFd) -> std::io::Result<()> {
        use nix::fcntl::{OFlag, open};
        use nix::mount::{MsFlags, mount};
        use nix::sys::stat::Mode;
        use std::os::fd::AsRawFd;
        for dir in &self.dirs {
            match nix::unistd::mkdir(dir.as_c_str(), Mode::from_bits_truncate(0o755)) {
                Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
                Err(e) => return Err(e.into()),
            }
        }
        // The mount point: a directory, or an empty file closed at once.
        if self.is_dir {
            match nix::unistd::mkdir(self.path.as_c_str(), Mode::from_bits_truncate(0o700)) {
                Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
                Err(e) => return Err(e.into()),
            }
        } else {
            drop(open(
                self.path.as_c_str(),
                OFlag::O_CREAT | OFlag::O_WRONLY | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(0o555),
            )?);
        }
        let mut buf = [0u8; 32];
        let source = proc_fd_path(held.as_raw_fd(), &mut buf);
        mount(
            Some(source),
            self.path.as_c_str(),
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )?;
        Ok(())
    }
}

/// `/proc/self/fd/<fd>` written into `buf` without allocating (this runs between fork and exec).
fn proc_fd_path(fd: i32, buf: &mut [u8; 32]) -> &std::ffi::CStr {
    const PREFIX: &[u8] = b"/proc/self/fd/";
    buf[..PREFIX.len()].copy_from_slice(PREFIX);
    let mut digits = [0u8; 10];
    let mut n = fd.unsigned_abs();
    let mut len = 0;
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for i in 0..len {
        buf[PREFIX.len() + i] = digits[len - 1 - i];
    }
    buf[PREFIX.len() + len] = 0;
    std::ffi::CStr::from_bytes_with_nul(&buf[..=PREFIX.len() + len]).expect("one NUL, at the end")
}

impl Isolation {
    /// `program` is what the child will exec and `spool` the shim's spool directory (if it
    /// runs one): both kept visible when the private `/tmp` would hide them.
    fn new(
        private_tmp: Option<&Path>,
        program: &Path,
        spool: Option<&Path>,
        enter_tmp: bool,
    ) -> std::io::Result<Self> {
        let tmp = private_tmp
            .map(|p| CString::new(p.as_os_str().as_encoded_bytes()))
            .transpose()
            .map_err(std::io::Error::other)?;
        let keep = match (&tmp, spool) {
            (None, _) => [None, None],
            (Some(_), spool) => [
                KeptPath::new(program, false)?,
                spool.map(|s| KeptPath::new(s, true)).transpose()?.flatten(),
            ],
        };
        Ok(Self {
            enter_tmp: enter_tmp && tmp.is_some(),
            tmp,
            keep,
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
            let held = [
                self.keep[0].as_ref().map(KeptPath::open).transpose()?,
                self.keep[1].as_ref().map(KeptPath::open).transpose()?,
            ];
            mount(
                Some(tmp.as_c_str()),
                "/tmp",
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )?;
            for (kept, held) in self.keep.iter().zip(&held) {
                if let (Some(kept), Some(held)) = (kept, held) {
                    kept.bind(held)?;
                }
            }
            if self.enter_tmp {
                nix::unistd::chdir(c"/tmp")?;
            }
        }
        Ok(())
    }
}

/// Replaces `/tmp/` where a path starts (not inside another path such as `target/tmp/`).
fn rewrite_tmp(text: &str, prefix: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut prev: Option<char> = None;
    while let Some(i) = rest.find("/tmp/") {
        let before = rest[..i].chars().next_back().or(prev);
        out.push_str(&rest[..i]);
        let inside_path = before.is_some_and(|c| c.is_alphanumeric() || "._-/~$}".contains(c));
        out.push_str(if inside_path { "/tmp/" } else { prefix });
        prev = Some('/');
        rest = &rest[i + "/tmp/".len()..];
    }
    out.push_str(rest);
    out
}

impl Runner for ProcessRunner {
    type Handle = ProcessHandle;

    fn start(&self, spec: StepSpec) -> Result<ProcessHandle, RunnerError> {
        let tmp = host_tmp(&spec)?;
        // Without a mount namespace, the step's own directory stands in for /tmp.
        let tmp_prefix = format!("{}/", tmp.display());
        let localize = |text: &str| {
            if self.private_tmp {
                text.to_string()
            } else {
                rewrite_tmp(text, &tmp_prefix)
            }
        };
        let mut argv: Vec<String> = spec.argv.iter().map(|a| localize(a)).collect();
        let mut env: Vec<(String, String)> = spec
            .env
            .iter()
            .map(|(k, v)| (k.clone(), localize(v)))
            .collect();
        if !self.private_tmp {
            env.push(("TMPDIR".into(), tmp.display().to_string()));
        }
        if let Some(source) = &spec.script {
            let host = stage_script(&tmp, &localize(source))?;
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
        let (log_path, log) = open_log(&spec)?;
        // The shim spools where its environment says; a spool under /tmp must stay shared
        // with the run (and `obsctl flush`), not vanish into the step's private /tmp.
        let spool = match (&self.shim, self.private_tmp) {
            (Some(_), true) => {
                let dir = env
                    .iter()
                    .rev()
                    .find(|(k, _)| k == crate::conventions::env::OBSCTL_SPOOL_DIR)
                    .map_or_else(crate::otlp::spool::Spool::env_dir, |(_, v)| {
                        PathBuf::from(v)
                    });
                // Only a spool under /tmp needs binding; elsewhere nothing is created early.
                if dir.starts_with("/tmp") {
                    std::fs::create_dir_all(&dir).map_err(prepare(&dir))?;
                    Some(dir)
                } else {
                    None
                }
            }
            _ => None,
        };
        // A step works in its template's `workingDir`, else in its own /tmp: never in obsctl's
        // directory, which the private /tmp hides when obsctl was started under /tmp (a
        // pyenv shim, for one, then exits with "cannot change working directory").
        let own_dir = match &spec.working_dir {
            Some(dir) => dir.clone(),
            None if self.private_tmp => "/tmp".to_string(),
            None => tmp.display().to_string(),
        };
        let isolation = Isolation::new(
            self.private_tmp.then_some(tmp.as_path()),
            Path::new(&full[0]),
            spool.as_deref(),
            spec.working_dir.is_none(),
        )
        .map_err(prepare(&tmp))?;
        let mut cmd = tokio::process::Command::new(&full[0]);
        cmd.args(&full[1..])
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log.try_clone().map_err(prepare(&log_path))?)
            .process_group(0)
            .kill_on_drop(true);
        if spec.working_dir.is_some() || !self.private_tmp {
            // With a private /tmp and no workingDir, the child enters /tmp after covering it.
            cmd.current_dir(&own_dir);
        }
        // Shells trust an inherited $PWD that names their directory; obsctl's would not.
        cmd.env("PWD", &own_dir);
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
        let mut sink = StdoutLines::new(&spec.node_name, self.shim.is_some(), tel_tx);
        let reader = tokio::spawn(async move {
            // Appends to the page cache are quick; tokio::fs would pay a thread hop per line.
            let mut log = log;
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if sink.line(&line) {
                    let _ = writeln!(log, "{line}");
                }
            }
            sink.finish("")
        });
        Ok(ProcessHandle {
            child,
            pgid,
            reader: Some(reader),
            telemetry: Some(tel_rx),
            exit: None,
            shimmed: self.shim.is_some(),
            stdout: String::new(),
            output_paths: spec.output_paths,
            tmp,
        })
    }
}

pub struct ProcessHandle {
    child: tokio::process::Child,
    pgid: Option<i32>,
    reader: Option<tokio::task::JoinHandle<String>>,
    telemetry: Option<tokio::sync::oneshot::Receiver<Option<ShimStart>>>,
    exit: Option<(i32, Option<Signal>)>,
    shimmed: bool,
    stdout: String,
    output_paths: Vec<String>,
    tmp: PathBuf,
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
                let host = self.tmp.join(path.trim_start_matches("/tmp/"));
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
        let (code, killed_by) = match self.exit {
            Some(exit) => exit,
            None => {
                let status = self.child.wait().await.map_err(RunnerError::Wait)?;
                let code = status
                    .code()
                    .or_else(|| status.signal().map(|s| 128 + s))
                    .unwrap_or(1);
                let killed_by = status
                    .signal()
                    .filter(|_| self.shimmed)
                    .and_then(|s| Signal::try_from(s).ok());
                self.exit = Some((code, killed_by));
                // Whatever the shim left behind in its group goes with it, as a pod's
                // containers go with the pod.
                self.signal(Signal::SIGKILL);
                (code, killed_by)
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
            shim_killed_by: killed_by,
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

#[cfg(test)]
mod tests {
    #[test]
    fn proc_fd_path_is_written_without_allocating() {
        let mut buf = [0u8; 32];
        assert_eq!(
            super::proc_fd_path(1023, &mut buf).to_str().unwrap(),
            "/proc/self/fd/1023"
        );
        assert_eq!(
            super::proc_fd_path(0, &mut buf).to_str().unwrap(),
            "/proc/self/fd/0"
        );
    }

    use super::*;

    fn start_line(span: SpanId) -> String {
        format!(
            "{{\"trace_id\":\"{}\",\"span_id\":\"{}\"}}",
            TraceId::random().to_hex(),
            span.to_hex()
        )
    }

    #[test]
    fn the_shim_end_line_is_seen_only_for_its_own_span_and_never_captured() {
        let span = SpanId::random();
        let (tx, _rx) = tokio::sync::oneshot::channel();
        let mut lines = StdoutLines::new("n", true, tx);
        assert!(!lines.line(&start_line(span)));
        assert!(lines.line("work"));
        // Another span's end line is the step's output, not the shim's.
        assert!(lines.line(&ShimEnd(SpanId::random()).line()));
        assert!(!lines.shim_ended());
        // A last output line without its newline runs into the end line.
        assert!(lines.line(&format!("partial{}", ShimEnd(span).line())));
        assert!(lines.shim_ended());
        let captured = lines.finish("");
        assert!(captured.starts_with("work\n"), "{captured}");
        assert!(captured.ends_with("partial\n"), "{captured}");
        assert!(!captured.contains(&ShimEnd(span).line()), "{captured}");
    }

    #[test]
    fn without_the_end_line_the_shim_did_not_end() {
        let span = SpanId::random();
        let (tx, _rx) = tokio::sync::oneshot::channel();
        let mut lines = StdoutLines::new("n", true, tx);
        lines.line(&start_line(span));
        lines.line("killed mid-step");
        assert!(!lines.shim_ended());
    }

    #[test]
    fn rewrite_touches_only_paths_that_start_at_tmp() {
        assert_eq!(
            rewrite_tmp(
                "echo x > /tmp/v; cat '/tmp/a' /work/target/tmp/keep TMP=/tmp/b",
                "/s/"
            ),
            "echo x > /s/v; cat '/s/a' /work/target/tmp/keep TMP=/s/b"
        );
        assert_eq!(rewrite_tmp("/tmp/x", "/s/"), "/s/x");
    }

    #[test]
    fn shim_start_line_is_recognised() {
        let line = r#"{"trace_id":"0af7651916cd43dd8448eb211c80319c","span_id":"b7ad6b7169203331","traceparent":"x"}"#;
        let start = ShimStart::parse(line).unwrap();
        assert_eq!(start.span_id.to_hex(), "b7ad6b7169203331");
        assert_eq!(ShimStart::parse("hello"), None);
    }
}
