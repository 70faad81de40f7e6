//! Secret redaction: the values of environment variables whose names look secret are replaced
//! wherever the shim would export them (log bodies, attributes, the command line).

use std::borrow::Cow;
use std::ffi::OsString;

/// Case-insensitive name fragments that mark a variable as secret.
pub const SECRET_MARKERS: [&str; 5] = ["TOKEN", "SECRET", "PASSWORD", "KEY", "CREDENTIAL"];
/// Shorter values are not redacted: they would blank out ordinary words and digits.
pub const MIN_SECRET_LEN: usize = 4;
pub const REDACTED: &str = "[REDACTED]";

#[derive(Debug, Clone, Default)]
pub struct Redactor {
    /// Longest first, so a secret containing another is replaced whole.
    secrets: Vec<String>,
}

impl Redactor {
    pub fn from_vars(vars: impl IntoIterator<Item = (OsString, OsString)>) -> Self {
        let mut secrets: Vec<String> = vars
            .into_iter()
            .filter(|(name, _)| {
                let name = name.to_string_lossy().to_ascii_uppercase();
                SECRET_MARKERS.iter().any(|m| name.contains(m))
            })
            .map(|(_, value)| value.to_string_lossy().into_owned())
            .filter(|value| value.chars().count() >= MIN_SECRET_LEN)
            .collect();
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        Self { secrets }
    }

    pub fn redact<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut out = Cow::Borrowed(text);
        for secret in &self.secrets {
            if out.contains(secret.as_str()) {
                out = Cow::Owned(out.replace(secret.as_str(), REDACTED));
            }
        }
        out
    }

    pub fn redact_owned(&self, text: &str) -> String {
        self.redact(text).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(list: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        list.iter().map(|(k, v)| (k.into(), v.into())).collect()
    }

    #[test]
    fn secret_looking_names_are_redacted_case_insensitively() {
        let r = Redactor::from_vars(vars(&[
            ("GITHUB_TOKEN", "ghp_abcdef"),
            ("db_password", "hunter22"),
            ("Api_Key", "k-123456"),
            ("AWS_CREDENTIALS", "creds-xyz"),
            ("MY_SECRET", "abc"),
            ("HOME", "/root"),
        ]));
        assert_eq!(
            r.redact("push with ghp_abcdef and hunter22, k-123456, creds-xyz at /root abc"),
            "push with [REDACTED] and [REDACTED], [REDACTED], [REDACTED] at /root abc"
        );
        assert!(matches!(r.redact("nothing here"), Cow::Borrowed(_)));
    }

    #[test]
    fn the_longest_secret_wins_when_one_contains_another() {
        let r = Redactor::from_vars(vars(&[("A_KEY", "abcd"), ("B_KEY", "abcdefgh")]));
        assert_eq!(r.redact("x abcdefgh y"), "x [REDACTED] y");
    }
}
