//! Values that must never be shown: bearer tokens, passwords, and header values (which may be
//! either). `Debug` and `Display` print a placeholder, so a secret that reaches an error, a log
//! line, a report or a record by accident shows up as `<redacted>`; only [`Secret::expose`]
//! gives the value, at the one place it goes on the wire.

use std::fmt;
use std::path::{Path, PathBuf};

/// What a secret prints as.
pub const REDACTED: &str = "<redacted>";

#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Secret(String);

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("cannot read the {what} file {}: {source}", path.display())]
    Read {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the {what} file {} is empty", path.display())]
    Empty { what: &'static str, path: PathBuf },
}

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The first line of `path` (a token or password file as Kubernetes mounts it, with or
    /// without a trailing newline); `what` names it in errors, which never quote the content.
    pub fn from_file(what: &'static str, path: &Path) -> Result<Self, SecretError> {
        let text = std::fs::read_to_string(path).map_err(|source| SecretError::Read {
            what,
            path: path.to_path_buf(),
            source,
        })?;
        let value = text.lines().next().unwrap_or("").trim();
        if value.is_empty() {
            return Err(SecretError::Empty {
                what,
                path: path.to_path_buf(),
            });
        }
        Ok(Self(value.to_string()))
    }

    /// The value itself, for the request that carries it and nothing else.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({REDACTED})")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_never_formats_as_its_value() {
        let s = Secret::new("hunter2");
        assert_eq!(s.to_string(), REDACTED);
        assert!(!format!("{s:?}").contains("hunter2"));
        assert!(!format!("{:?}", vec![("authorization", s.clone())]).contains("hunter2"));
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn files_give_their_first_line_and_errors_never_quote_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "tok-123\n").unwrap();
        assert_eq!(
            Secret::from_file("token", &path).unwrap().expose(),
            "tok-123"
        );
        std::fs::write(&path, "\n").unwrap();
        let err = Secret::from_file("token", &path).unwrap_err().to_string();
        assert!(err.contains("is empty") && err.contains("token"), "{err}");
        let err = Secret::from_file("password", &dir.path().join("nope"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("cannot read the password file"), "{err}");
    }
}
