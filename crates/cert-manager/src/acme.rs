//! One ACMEv2 (RFC 8555) HTTP-01 issuance with instant-acme: account, order, challenge files,
//! CSR, certificate. Renewal information (RFC 9773, ARI) is asked for when the CA offers it.

use crate::error::{problem_line, CertError};
use base64::Engine;
use bytes::Bytes;
use instant_acme_ring::{
    Account, AccountCredentials, AuthorizationStatus, BodyWrapper, CertificateIdentifier,
    ChallengeStatus, ChallengeType, HttpClient, Identifier, NewAccount, NewOrder, OrderStatus,
    RetryPolicy,
};
use rustls_pki_types::CertificateDer;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Settings of one ACME server.
#[derive(Debug, Clone)]
pub struct AcmeSettings {
    /// Directory URL.
    pub directory_url: String,
    /// Extra trusted roots (PEM) for the ACME server's TLS certificate.
    pub ca_bundle: Option<PathBuf>,
    /// Account contact.
    pub email: String,
    /// Where the account credentials live.
    pub account_file: PathBuf,
    /// Where HTTP-01 token files are written.
    pub challenge_dir: PathBuf,
    /// Certbot's configuration directory (`/snikket/letsencrypt`), for adopting its account.
    pub letsencrypt_dir: PathBuf,
    /// The lineage's `renewal/<name>.conf`, which names certbot's account.
    pub renewal_conf: PathBuf,
}

/// An HTTPS connector trusting the Mozilla roots (webpki-roots: the container has no system
/// store) plus the configured bundle. Plain `http://` is allowed too (error reports, tests).
pub fn connector(
    ca_bundle: Option<&Path>,
) -> Result<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    CertError,
> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_bundle {
        let pem = std::fs::read(path).map_err(|e| CertError::io("reading", path, e))?;
        let mut reader = pem.as_slice();
        let mut added = 0;
        for cert in rustls_pemfile::certs(&mut reader) {
            let cert = cert.map_err(|e| CertError::CaBundle {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?;
            roots.add(cert).map_err(|e| CertError::CaBundle {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?;
            added += 1;
        }
        if added == 0 {
            return Err(CertError::CaBundle {
                path: path.to_path_buf(),
                reason: "no certificates in file".into(),
            });
        }
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| CertError::Certificate(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .build())
}

/// The ACME HTTP client (see [`connector`]).
pub fn http_client(ca_bundle: Option<&Path>) -> Result<Box<dyn HttpClient>, CertError> {
    let client: hyper_util::client::legacy::Client<_, BodyWrapper<Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(connector(ca_bundle)?);
    Ok(Box::new(client))
}

/// Loads the stored account for this directory, or registers one (terms agreed) and stores it.
pub async fn account(settings: &AcmeSettings) -> Result<Account, CertError> {
    let http = http_client(settings.ca_bundle.as_deref())?;
    let path = &settings.account_file;
    if let Ok(text) = std::fs::read(path) {
        let stored: StoredAccount =
            serde_json::from_slice(&text).map_err(|e| CertError::Account {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        if stored.directory_url == settings.directory_url {
            tracing::debug!(path = %path.display(), "using stored acme account");
            return Ok(Account::builder_with_http(http)
                .from_credentials(stored.credentials)
                .await?);
        }
        tracing::info!("acme directory changed; registering a new account");
    }
    match adopt_certbot(settings).await {
        Ok(Some(credentials)) => {
            store(settings, &credentials)?;
            return Ok(Account::builder_with_http(http)
                .from_credentials(credentials)
                .await?);
        }
        Ok(None) => {}
        Err(e) if e.is_soft() => return Err(e),
        // Unreadable files, a key type we cannot use, or a CA that no longer knows the key:
        // a new account is what certbot would end up with too.
        Err(e) => tracing::warn!(
            error = %e,
            "certbot's acme account cannot be adopted; registering a new account"
        ),
    }
    let contact = format!("mailto:{}", settings.email);
    let (account, credentials) = Account::builder_with_http(http)
        .create(
            &NewAccount {
                contact: &[&contact],
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            settings.directory_url.clone(),
            None,
        )
        .await?;
    store(settings, &credentials)?;
    tracing::info!(id = account.id(), "registered acme account");
    Ok(account)
}

fn store(settings: &AcmeSettings, credentials: &AccountCredentials) -> Result<(), CertError> {
    let path = &settings.account_file;
    let stored = StoredAccountRef {
        directory_url: &settings.directory_url,
        email: &settings.email,
        credentials,
    };
    let text = serde_json::to_vec_pretty(&stored).map_err(|e| CertError::Account {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    snikket_runtime::files::write_atomic(path, &text, 0o600)?;
    Ok(())
}

/// Certbot's account for this directory, made usable for instant-acme (see
/// [`crate::certbot_account`]); `None` when certbot has none.
async fn adopt_certbot(settings: &AcmeSettings) -> Result<Option<AccountCredentials>, CertError> {
    let Some(found) = crate::certbot_account::find(
        &settings.letsencrypt_dir,
        &settings.renewal_conf,
        &settings.directory_url,
    )?
    else {
        return Ok(None);
    };
    tracing::info!(account = %found.url, dir = %found.dir.display(), "adopting certbot's acme account");
    let adopted = crate::certbot_account::adopt(
        found,
        &settings.directory_url,
        &settings.renewal_conf,
        settings.ca_bundle.as_deref(),
    )
    .await?;
    // instant-acme's credentials are opaque but documented as serialisable: they are built
    // through that format.
    let credentials = serde_json::from_value(serde_json::json!({
        "id": adopted.url,
        "key_pkcs8": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&adopted.pkcs8),
        "directory": settings.directory_url,
    }))
    .map_err(|e| CertError::Account {
        path: settings.account_file.clone(),
        reason: e.to_string(),
    })?;
    Ok(Some(credentials))
}

#[derive(serde::Serialize)]
struct StoredAccountRef<'a> {
    directory_url: &'a str,
    email: &'a str,
    credentials: &'a AccountCredentials,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct StoredAccount {
    directory_url: String,
    email: String,
    credentials: AccountCredentials,
}

/// The CA's suggested renewal time for `leaf_der` (ARI), as Unix seconds; `None` when the CA
/// does not offer ARI or the certificate lacks the needed fields.
pub async fn suggested_renewal(account: &Account, leaf_der: &[u8]) -> Option<i64> {
    let der = CertificateDer::from(leaf_der.to_vec());
    let id = CertificateIdentifier::try_from(&der).ok()?;
    match account.renewal_info(&id).await {
        Ok((info, _retry_after)) => {
            let start = info.suggested_window.start.unix_timestamp();
            let end = info.suggested_window.end.unix_timestamp();
            let span = (end - start).max(0);
            let pick = if span > 0 {
                start + rand::random::<i64>().rem_euclid(span)
            } else {
                start
            };
            Some(pick)
        }
        Err(instant_acme_ring::Error::Unsupported(_)) => None,
        Err(e) => {
            tracing::debug!(error = %e, "acme renewal information unavailable");
            None
        }
    }
}

/// Orders a certificate for `names` with `key` (PEM); returns the PEM chain (leaf first).
pub async fn issue(
    account: &Account,
    settings: &AcmeSettings,
    names: &[String],
    key: &rcgen::KeyPair,
) -> Result<String, CertError> {
    let identifiers: Vec<Identifier> = names.iter().map(|n| Identifier::Dns(n.clone())).collect();
    let mut order = account.new_order(&NewOrder::new(&identifiers)).await?;
    // Removes the token files even when the attempt is cancelled (shutdown) midway.
    let mut written = ChallengeFiles(Vec::new());
    run_order(&mut order, settings, names, key, &mut written.0).await
}

struct ChallengeFiles(Vec<PathBuf>);

impl Drop for ChallengeFiles {
    fn drop(&mut self) {
        for path in &self.0 {
            if let Err(e) = std::fs::remove_file(path) {
                tracing::debug!(path = %path.display(), error = %e, "removing challenge file");
            }
        }
    }
}

async fn run_order(
    order: &mut instant_acme_ring::Order,
    settings: &AcmeSettings,
    names: &[String],
    key: &rcgen::KeyPair,
    written: &mut Vec<PathBuf>,
) -> Result<String, CertError> {
    let dir = &settings.challenge_dir;
    std::fs::create_dir_all(dir).map_err(|e| CertError::io("creating", dir, e))?;
    {
        let mut authzs = order.authorizations();
        while let Some(authz) = authzs.next().await {
            let mut authz = authz?;
            match authz.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                other => {
                    return Err(CertError::Acme {
                        detail: format!("authorization is {other:?}"),
                        soft: false,
                    })
                }
            }
            let mut challenge =
                authz
                    .challenge(ChallengeType::Http01)
                    .ok_or_else(|| CertError::Acme {
                        detail: "the CA offered no http-01 challenge".into(),
                        soft: false,
                    })?;
            let token = challenge.token.clone();
            if token.is_empty()
                || !token
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(CertError::Acme {
                    detail: "the CA sent a malformed challenge token".into(),
                    soft: false,
                });
            }
            let path = dir.join(&token);
            snikket_runtime::files::write_atomic(
                &path,
                challenge.key_authorization().as_str().as_bytes(),
                0o644,
            )?;
            written.push(path);
            challenge.set_ready().await?;
        }
    }
    let poll = RetryPolicy::new()
        .initial_delay(Duration::from_millis(250))
        .backoff(1.5)
        .timeout(Duration::from_secs(120));
    let status = order.poll_ready(&poll).await;
    match status {
        Ok(OrderStatus::Ready) => {}
        Ok(_) => return Err(authorization_errors(order, None).await),
        Err(instant_acme_ring::Error::Api(p)) => {
            return Err(authorization_errors(order, Some(problem_line(&p))).await)
        }
        Err(e) => return Err(e.into()),
    }
    let csr = rcgen::CertificateParams::new(names.to_vec())
        .and_then(|p| p.serialize_request(key))
        .map_err(|e| CertError::Certificate(e.to_string()))?;
    order.finalize_csr(csr.der()).await?;
    Ok(order.poll_certificate(&poll).await?)
}

/// Collects `detail` of every invalid challenge (what certbot's log parsing extracts, spec 7.3).
async fn authorization_errors(
    order: &mut instant_acme_ring::Order,
    order_problem: Option<String>,
) -> CertError {
    let mut lines: Vec<String> = Vec::new();
    let mut authzs = order.authorizations();
    while let Some(authz) = authzs.next().await {
        let Ok(mut authz) = authz else { continue };
        let ident = authz.identifier().to_string();
        let Ok(state) = authz.refresh().await else {
            continue;
        };
        for ch in &state.challenges {
            if ch.status == ChallengeStatus::Invalid {
                if let Some(err) = &ch.error {
                    lines.push(format!("{ident}: {}", problem_line(err)));
                }
            }
        }
    }
    if let Some(p) = order_problem {
        // The order-level problem often repeats one challenge's detail.
        if !lines.iter().any(|l| l.ends_with(&p)) {
            lines.push(p);
        }
    }
    if lines.is_empty() {
        lines.push("the order became invalid".into());
    }
    let detail = lines.join("\n");
    let soft = crate::error::is_soft_detail(
        &lines
            .iter()
            .map(|l| l.split_once(": ").map_or(l.as_str(), |(_, d)| d))
            .collect::<Vec<_>>()
            .join("\n"),
    );
    CertError::Acme { detail, soft }
}
