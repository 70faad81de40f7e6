//! Debian's headless `chromium` as a test fixture: renders a local file to a PNG (kept as a test
//! artifact) and to its DOM after rendering. A missing chromium skips loudly, and fails under CI
//! (`scripts/test.sh` installs it).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::{ChildGuard, require_tool, wait_with_deadline};

const RENDER_LIMIT: Duration = Duration::from_secs(90);

pub struct Chromium {
    exe: PathBuf,
}

/// Where screenshots are kept after the test, for a person (or a CI artifact upload) to look at.
pub fn artifact_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("html-report");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

impl Chromium {
    /// `Some` when chromium is installed; otherwise see [`super::missing`].
    pub fn require(test: &str) -> Option<Self> {
        require_tool("chromium", test).map(|exe| Self { exe })
    }

    fn run(&self, file: &Path, args: &[String]) -> std::process::Output {
        let profile = tempfile::tempdir().unwrap();
        let child = Command::new(&self.exe)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--hide-scrollbars",
                "--no-first-run",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .args(args)
            .arg(format!("file://{}", file.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn chromium");
        let mut guard = ChildGuard::new(child);
        let status = wait_with_deadline(&mut guard, RENDER_LIMIT);
        let out = guard.into_inner().wait_with_output().unwrap();
        assert!(
            status.success(),
            "chromium failed on {}: {}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// The page's DOM as chromium built it, serialized.
    pub fn dom(&self, file: &Path) -> String {
        String::from_utf8(self.run(file, &["--dump-dom".into()]).stdout).unwrap()
    }

    /// A PNG of the page at 1280 px wide, light or dark, into [`artifact_dir`]; answers its path.
    pub fn screenshot(&self, file: &Path, name: &str, dark: bool) -> PathBuf {
        let png = artifact_dir().join(name);
        let _ = std::fs::remove_file(&png);
        let mut args = vec![
            format!("--screenshot={}", png.display()),
            "--window-size=1280,2000".into(),
        ];
        if dark {
            args.push("--force-dark-mode".into());
            args.push("--blink-settings=preferredColorScheme=0".into());
        }
        self.run(file, &args);
        let bytes = std::fs::read(&png).unwrap_or_default();
        assert!(
            bytes.starts_with(b"\x89PNG") && bytes.len() > 10_000,
            "chromium wrote no real screenshot of {} to {} ({} bytes)",
            file.display(),
            png.display(),
            bytes.len()
        );
        png
    }
}
