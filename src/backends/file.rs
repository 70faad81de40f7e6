//! The backends file (`--backends-file`, `OBSCTL_BACKENDS_FILE`): where a shared or hosted
//! stack's Tempo, Prometheus and Loki answer and how obsctl is let in, in one file instead of
//! a dozen flags. Tokens and passwords never sit in it: it names the files that hold them.
//! Flags (and their variables) win over the file; within the file a backend's own settings win
//! over those under `all`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::UrlFlags;
use super::access::{Access, AccessError, BackendAccess, Credential, Header, tenant};
use crate::secret::Secret;
use crate::tls::TlsOptions;

/// For example:
/// ```yaml
/// caFile: /etc/ssl/corp-ca.pem
/// all:
///   tokenFile: /run/secrets/observability-token
///   tenant: team-agents
/// tempo:
///   url: https://tempo.internal:3200
/// prometheus:
///   url: https://mimir.internal/prometheus
///   headers: {X-Org: agents}
/// loki:
///   url: https://loki.internal:3100
///   basicAuth: {user: "123456", passwordFile: /run/secrets/loki-password}
/// ```
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct FileConfig {
    ca_file: Option<PathBuf>,
    #[serde(default)]
    insecure_skip_verify: bool,
    #[serde(default)]
    all: FileBackend,
    #[serde(default)]
    tempo: FileBackend,
    #[serde(default)]
    prometheus: FileBackend,
    #[serde(default)]
    loki: FileBackend,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct FileBackend {
    url: Option<String>,
    token_file: Option<PathBuf>,
    basic_auth: Option<BasicAuth>,
    tenant: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct BasicAuth {
    user: String,
    password_file: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("cannot read the backends file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("backends file {}: {message}", path.display())]
    Parse { path: PathBuf, message: String },
    #[error(
        "backends file {}: `all.url` is not allowed: give `url` under tempo, prometheus and loki",
        path.display()
    )]
    SharedUrl { path: PathBuf },
    #[error("backends file {}: {source}", path.display())]
    Access { path: PathBuf, source: AccessError },
}

/// What the file says, as the types the flags resolve to.
#[derive(Debug, Clone, Default)]
pub struct BackendsFile {
    pub urls: UrlFlags,
    pub access: BackendAccess,
}

impl BackendsFile {
    /// Reads and checks `path`; the token and password files it names are read here too, so a
    /// missing one is an error before any request.
    pub fn load(path: &Path) -> Result<Self, FileError> {
        let text = std::fs::read_to_string(path).map_err(|source| FileError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        // serde_norway's message names the field, what it expected, and the line and column.
        let file: FileConfig = serde_norway::from_str(&text).map_err(|e| FileError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        if file.all.url.is_some() {
            return Err(FileError::SharedUrl {
                path: path.to_path_buf(),
            });
        }
        let access = |what: &str, backend: &FileBackend| {
            backend.access(what).map_err(|source| FileError::Access {
                path: path.to_path_buf(),
                source,
            })
        };
        let all = access("all", &file.all)?;
        Ok(Self {
            urls: UrlFlags {
                tempo: file.tempo.url.clone(),
                prometheus: file.prometheus.url.clone(),
                loki: file.loki.url.clone(),
            },
            access: BackendAccess {
                tls: TlsOptions {
                    ca_file: file.ca_file,
                    insecure_skip_verify: file.insecure_skip_verify,
                    ..Default::default()
                },
                tempo: all.overlaid(&access("tempo", &file.tempo)?),
                prometheus: all.overlaid(&access("prometheus", &file.prometheus)?),
                loki: all.overlaid(&access("loki", &file.loki)?),
            },
        })
    }
}

impl FileBackend {
    /// `what` (`all`, `tempo`, ...) names the section in errors.
    fn access(&self, what: &str) -> Result<Access, AccessError> {
        let credential = match (&self.token_file, &self.basic_auth) {
            (Some(path), _) => Some(Credential::Bearer(Secret::from_file("token", path)?)),
            (None, Some(basic)) => Some(Credential::Basic {
                user: basic.user.clone(),
                password: Secret::from_file("password", &basic.password_file)?,
            }),
            (None, None) => None,
        };
        Ok(Access {
            credential,
            tenant: self
                .tenant
                .as_deref()
                .map(|t| tenant(&format!("{what}.tenant"), t))
                .transpose()?,
            headers: self
                .headers
                .iter()
                .map(|(name, value)| {
                    Header::parse(&format!("{what}.headers"), &format!("{name}={value}"))
                })
                .collect::<Result<_, _>>()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn sections_merge_and_secrets_come_from_their_files() {
        let dir = tempfile::tempdir().unwrap();
        let token = write(dir.path(), "token", "tok-all\n");
        let password = write(dir.path(), "pw", "pw-loki");
        let file = write(
            dir.path(),
            "backends.yaml",
            &format!(
                "caFile: /ca.pem\nall:\n  tokenFile: {}\n  tenant: team-a\n  headers: {{X-A: '1'}}\n\
                 tempo:\n  url: https://tempo:3200\n  tenant: team-t\n\
                 loki:\n  url: https://loki:3100\n  basicAuth: {{user: u1, passwordFile: {}}}\n",
                token.display(),
                password.display()
            ),
        );
        let loaded = BackendsFile::load(&file).unwrap();
        assert_eq!(loaded.urls.tempo.as_deref(), Some("https://tempo:3200"));
        assert_eq!(loaded.urls.prometheus, None);
        assert_eq!(
            loaded.access.tls.ca_file.as_deref(),
            Some(Path::new("/ca.pem"))
        );
        let access = &loaded.access;
        assert_eq!(access.tempo.tenant.as_deref(), Some("team-t"));
        assert_eq!(access.prometheus.tenant.as_deref(), Some("team-a"));
        assert_eq!(access.loki.headers.len(), 1);
        match &access.loki.credential {
            Some(Credential::Basic { user, password }) => {
                assert_eq!((user.as_str(), password.expose()), ("u1", "pw-loki"));
            }
            other => panic!("{other:?}"),
        }
        match &access.prometheus.credential {
            Some(Credential::Bearer(token)) => assert_eq!(token.expose(), "tok-all"),
            other => panic!("{other:?}"),
        }
        assert!(!format!("{loaded:?}").contains("tok-all"));
    }

    #[test]
    fn mistakes_name_the_file_the_field_and_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let typo = write(
            dir.path(),
            "b.yaml",
            "tempo:\n  url: https://t\n  tenat: x\n",
        );
        let err = BackendsFile::load(&typo).unwrap_err().to_string();
        assert!(
            err.contains("b.yaml") && err.contains("tenat") && err.contains("line 3"),
            "{err}"
        );
        let shared = write(dir.path(), "s.yaml", "all:\n  url: https://t\n");
        let err = BackendsFile::load(&shared).unwrap_err().to_string();
        assert!(err.contains("all.url"), "{err}");
        let header = write(
            dir.path(),
            "h.yaml",
            "loki:\n  headers: {'bad name': s3cr3t}\n",
        );
        let err = BackendsFile::load(&header).unwrap_err().to_string();
        assert!(
            err.contains("loki.headers") && !err.contains("s3cr3t"),
            "{err}"
        );
        let missing = write(dir.path(), "m.yaml", "all:\n  tokenFile: /nonexistent/t\n");
        let err = BackendsFile::load(&missing).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/t"), "{err}");
    }
}
