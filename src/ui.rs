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
