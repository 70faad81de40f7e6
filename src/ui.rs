//! Terminal conventions shared by every command: verbosity from `-v`, colour only on a terminal
//! and never when `NO_COLOR` is set (https://no-color.org).

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU8, Ordering};

static VERBOSITY: AtomicU8 = AtomicU8::new(0);

/// Sets the verbosity once, from the global `-v` count.
pub fn set_verbosity(level: u8) {
    VERBOSITY.store(level, Ordering::Relaxed);
}

pub fn verbosity() -> u8 {
    VERBOSITY.load(Ordering::Relaxed)
}

/// Prints a diagnostic on stderr when the user asked for at least `level` `-v` flags.
pub fn debug(level: u8, message: impl AsRef<str>) {
    if verbosity() >= level {
        eprintln!("obsctl: {}", message.as_ref());
    }
}

/// Prints a notice on stderr at every verbosity: something the user should know about how the
/// command runs (a fallback taken), though nothing failed.
pub fn note(message: impl AsRef<str>) {
    eprintln!("obsctl: {}", message.as_ref());
}

/// Whether stdout may carry ANSI colour: a terminal, and `NO_COLOR` unset or empty.
pub fn color_enabled() -> bool {
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    !no_color && std::io::stdout().is_terminal()
}

/// Whether live progress (spinners, bars) makes sense: a terminal on stderr and not in CI.
pub fn progress_enabled() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("CI").is_none()
}

/// `text` in double quotes with JSON escapes, for quoting values in messages: control characters
/// and quotes stay visible and unambiguous.
pub fn quoted(text: &str) -> String {
    serde_json::Value::from(text).to_string()
}

/// A duration in the syntax every duration flag takes (`500ms`, `30s`, `1m30s`, `2h`), for what
/// users read: never Rust's debug form. Whole seconds above one second.
pub fn duration(d: std::time::Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let secs = d.as_secs();
    let parts = [(secs / 3600, "h"), (secs / 60 % 60, "m"), (secs % 60, "s")];
    parts
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, unit)| format!("{n}{unit}"))
        .collect()
}

/// A wait the user should see (the rule: progress on every wait longer than a second).
/// On a terminal, a spinner with the elapsed time and what is still outstanding; elsewhere (CI
/// logs, pipes) one line on stderr once the wait has lasted a second, naming what it waits for
/// and its limit, and nothing for a wait that ends sooner. `-v` adds its own detail lines.
pub struct Wait {
    what: String,
    limit: std::time::Duration,
    started: std::time::Instant,
    spinner: Option<indicatif::ProgressBar>,
    said: bool,
}

impl Wait {
    pub fn new(what: impl Into<String>, limit: std::time::Duration) -> Self {
        let what = what.into();
        let spinner = progress_enabled().then(|| {
            let bar = indicatif::ProgressBar::new_spinner();
            bar.set_style(
                indicatif::ProgressStyle::with_template("{spinner} {elapsed:>4} {prefix}: {msg}")
                    .expect("a valid template"),
            );
            bar.set_prefix(what.clone());
            bar.enable_steady_tick(std::time::Duration::from_millis(120));
            bar
        });
        Self {
            what,
            limit,
            started: std::time::Instant::now(),
            spinner,
            said: false,
        }
    }

    /// What the wait is still waiting for.
    pub fn update(&mut self, outstanding: &str) {
        if let Some(bar) = &self.spinner {
            bar.set_message(outstanding.to_string());
        } else if !self.said && self.started.elapsed() >= std::time::Duration::from_secs(1) {
            self.said = true;
            note(format!(
                "{}: waiting up to {} ({outstanding})",
                self.what,
                duration(self.limit)
            ));
        }
    }
}

impl Drop for Wait {
    fn drop(&mut self) {
        if let Some(bar) = &self.spinner {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// What users read parses back with the flags' parser to the same duration.
    #[test]
    fn durations_read_as_the_flags_take_them() {
        for (d, text) in [
            (Duration::from_millis(0), "0ms"),
            (Duration::from_millis(500), "500ms"),
            (Duration::from_secs(30), "30s"),
            (Duration::from_secs(90), "1m30s"),
            (Duration::from_secs(7200), "2h"),
            (Duration::from_secs(3723), "1h2m3s"),
        ] {
            assert_eq!(duration(d), text);
            assert_eq!(crate::checks::time::parse_duration(text), Ok(d), "{text}");
        }
    }
}
