//! The flags that let `verify`, `trace`, `demo` and `chaos` into a shared or hosted backend:
//! TLS, a bearer token or basic auth, a tenant, extra headers; each for all backends and per
//! backend. Arguments only: `backends::access` holds the types and the merge.

use std::path::PathBuf;

use crate::backends::access::{
    Access, AccessError, BackendAccess, Credential, Header, TokenSource, tenant,
};
use crate::backends::file::{BackendsFile, FileError};
use crate::backends::{Connector, UrlFlags};
use crate::conventions::env;
use crate::secret::Secret;
use crate::tls::TlsOptions;

#[derive(Debug, Clone, Default, clap::Args)]
#[command(next_help_heading = "Backend access (TLS, credentials, tenant)")]
pub struct AccessArgs {
    /// YAML file with the backends' URLs, TLS, token and password files, tenants and headers
    /// (docs/observability.md); flags win over it.
    #[arg(long, value_name = "PATH", env = env::OBSCTL_BACKENDS_FILE)]
    pub backends_file: Option<PathBuf>,
    /// PEM CA certificate(s) to verify the backends' TLS certificates with, instead of the
    /// system's roots.
    #[arg(long, value_name = "PATH", env = env::OBSCTL_CA_FILE)]
    pub ca_file: Option<PathBuf>,
    /// DANGEROUS: accept any TLS certificate from the backends. The connection is encrypted
    /// but anyone on the path can read the credentials and forge the answers.
    #[arg(long)]
    pub insecure_skip_verify: bool,
    /// Bearer token for every backend, read from the first line of PATH.
    #[arg(long, value_name = "PATH", env = env::OBSCTL_TOKEN_FILE, conflicts_with = "token")]
    pub token_file: Option<PathBuf>,
    /// Bearer token for every backend. Prefer the variable or --token-file: a flag's value is
    /// visible to every user of the machine.
    #[arg(long, value_name = "TOKEN", env = env::OBSCTL_TOKEN, hide_env_values = true)]
    pub token: Option<String>,
    /// Basic-auth user for every backend; the password comes from --basic-auth-password-file
    /// or the OBSCTL_BASIC_AUTH_PASSWORD variable.
    #[arg(long, value_name = "USER", env = env::OBSCTL_BASIC_AUTH_USER, conflicts_with_all = ["token", "token_file"])]
    pub basic_auth_user: Option<String>,
    /// File whose first line is the basic-auth password.
    #[arg(long, value_name = "PATH", env = env::OBSCTL_BASIC_AUTH_PASSWORD_FILE, requires = "basic_auth_user")]
    pub basic_auth_password_file: Option<PathBuf>,
    #[arg(long, hide = true, env = env::OBSCTL_BASIC_AUTH_PASSWORD, hide_env_values = true)]
    pub basic_auth_password: Option<String>,
    /// Tenant for every backend, sent as X-Scope-OrgID (multi-tenant Tempo, Loki, Mimir).
    #[arg(long, value_name = "ID", env = env::OBSCTL_TENANT)]
    pub tenant: Option<String>,
    /// Extra header for every backend (repeatable).
    #[arg(long, value_name = "NAME=VALUE")]
    pub header: Vec<String>,
    /// Bearer token for Tempo alone, read from PATH.
    #[arg(long, value_name = "PATH")]
    pub tempo_token_file: Option<PathBuf>,
    /// Tenant for Tempo alone.
    #[arg(long, value_name = "ID")]
    pub tempo_tenant: Option<String>,
    /// Extra header for Tempo alone (repeatable).
    #[arg(long, value_name = "NAME=VALUE")]
    pub tempo_header: Vec<String>,
    /// Bearer token for Prometheus alone, read from PATH.
    #[arg(long, value_name = "PATH")]
    pub prometheus_token_file: Option<PathBuf>,
    /// Tenant for Prometheus (Mimir) alone.
    #[arg(long, value_name = "ID")]
    pub prometheus_tenant: Option<String>,
    /// Extra header for Prometheus alone (repeatable).
    #[arg(long, value_name = "NAME=VALUE")]
    pub prometheus_header: Vec<String>,
    /// Bearer token for Loki alone, read from PATH.
    #[arg(long, value_name = "PATH")]
    pub loki_token_file: Option<PathBuf>,
    /// Tenant for Loki alone.
    #[arg(long, value_name = "ID")]
    pub loki_tenant: Option<String>,
    /// Extra header for Loki alone (repeatable).
    #[arg(long, value_name = "NAME=VALUE")]
    pub loki_header: Vec<String>,
}

impl AccessArgs {
    /// The backends file, when one is given.
    pub fn file(&self) -> Result<Option<BackendsFile>, FileError> {
        self.backends_file
            .as_deref()
            .map(BackendsFile::load)
            .transpose()
    }

    /// Everything the flags and the backends file say, ready to build clients with: `urls`
    /// (the command's URL flags) win over the file's URLs. Warns on stderr when certificates
    /// go unverified.
    pub fn connector(&self, urls: UrlFlags) -> anyhow::Result<Connector> {
        let file = self.file()?;
        let urls = urls.or(file.as_ref().map(|f| f.urls.clone()).unwrap_or_default());
        let access = self.resolve(file.as_ref())?;
        if access.tls.insecure_skip_verify {
            crate::ui::note(
                "warning: --insecure-skip-verify: the backends' TLS certificates are NOT \
                 verified; anyone on the path can read the credentials and forge the answers",
            );
        }
        Ok(Connector::new(access, urls)?)
    }

    /// The flags' settings on top of `file`'s; secrets are read from their files here, so a
    /// missing file is an error before any request.
    pub fn resolve(&self, file: Option<&BackendsFile>) -> Result<BackendAccess, AccessError> {
        let flags = self.flags_only()?;
        let Some(file) = file.map(|f| &f.access) else {
            return Ok(flags);
        };
        Ok(BackendAccess {
            tls: TlsOptions {
                ca_file: flags.tls.ca_file.or_else(|| file.tls.ca_file.clone()),
                insecure_skip_verify: flags.tls.insecure_skip_verify
                    || file.tls.insecure_skip_verify,
                ..Default::default()
            },
            tempo: file.tempo.overlaid(&flags.tempo),
            prometheus: file.prometheus.overlaid(&flags.prometheus),
            loki: file.loki.overlaid(&flags.loki),
        })
    }

    fn flags_only(&self) -> Result<BackendAccess, AccessError> {
        let token = match (&self.token_file, &self.token) {
            (Some(path), _) => Some(TokenSource::File(path.clone())),
            (None, Some(value)) => Some(TokenSource::Value(Secret::new(value.clone()))),
            (None, None) => None,
        };
        let mut shared = per_backend("", token, &self.tenant, &self.header)?;
        if let Some(user) = &self.basic_auth_user {
            let password = match (&self.basic_auth_password_file, &self.basic_auth_password) {
                (Some(path), _) => Secret::from_file("password", path)?,
                (None, Some(value)) => Secret::new(value.clone()),
                (None, None) => Secret::new(""),
            };
            shared.credential = Some(Credential::Basic {
                user: user.clone(),
                password,
            });
        }
        let specific = |prefix, file: &Option<PathBuf>, tenant, headers| {
            per_backend(prefix, file.clone().map(TokenSource::File), tenant, headers)
                .map(|access| shared.overlaid(&access))
        };
        Ok(BackendAccess {
            tls: TlsOptions {
                ca_file: self.ca_file.clone(),
                insecure_skip_verify: self.insecure_skip_verify,
                ..Default::default()
            },
            tempo: specific(
                "tempo-",
                &self.tempo_token_file,
                &self.tempo_tenant,
                &self.tempo_header,
            )?,
            prometheus: specific(
                "prometheus-",
                &self.prometheus_token_file,
                &self.prometheus_tenant,
                &self.prometheus_header,
            )?,
            loki: specific(
                "loki-",
                &self.loki_token_file,
                &self.loki_tenant,
                &self.loki_header,
            )?,
        })
    }
}

/// One backend's settings (or every backend's, with an empty `prefix`), from its flags.
fn per_backend(
    prefix: &str,
    token: Option<TokenSource>,
    tenant_flag: &Option<String>,
    headers: &[String],
) -> Result<Access, AccessError> {
    let header_flag = format!("--{prefix}header");
    Ok(Access {
        credential: token.map(|t| t.read()).transpose()?,
        tenant: tenant_flag
            .as_deref()
            .map(|t| tenant(&format!("--{prefix}tenant"), t))
            .transpose()?,
        headers: headers
            .iter()
            .map(|h| Header::parse(&header_flag, h))
            .collect::<Result<_, _>>()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backends::Backend;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        access: AccessArgs,
    }

    #[test]
    fn per_backend_flags_override_the_shared_ones() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "tok-shared\n").unwrap();
        let loki_token = dir.path().join("loki-token");
        std::fs::write(&loki_token, "tok-loki").unwrap();
        let cli = Cli::try_parse_from([
            "x",
            "--token-file",
            token.to_str().unwrap(),
            "--tenant",
            "team-a",
            "--loki-token-file",
            loki_token.to_str().unwrap(),
            "--tempo-tenant",
            "team-t",
            "--header",
            "X-A=1",
        ])
        .unwrap();
        let access = cli.access.resolve(None).unwrap();
        let bearer = |b| match &access.of(b).credential {
            Some(Credential::Bearer(s)) => s.expose().to_string(),
            other => panic!("{other:?}"),
        };
        assert_eq!(bearer(Backend::Tempo), "tok-shared");
        assert_eq!(bearer(Backend::Loki), "tok-loki");
        assert_eq!(access.tempo.tenant.as_deref(), Some("team-t"));
        assert_eq!(access.prometheus.tenant.as_deref(), Some("team-a"));
        assert_eq!(access.loki.headers.len(), 1);
        assert!(!format!("{access:?}").contains("tok-"));
    }

    #[test]
    fn a_missing_token_file_is_named() {
        let cli = Cli::try_parse_from(["x", "--tempo-token-file", "/nonexistent/t"]).unwrap();
        let err = cli.access.resolve(None).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/t"), "{err}");
    }
}
