//! Typed, validated configuration for every Snikket service, read from `snikket.conf` and the
//! environment with Snikket's variable names and defaults.
//!
//! [`Config::load`] is the entry point for binaries; [`Config::from_vars`] is the pure core used by
//! tests. Validation collects every problem before failing, so an operator fixes them all in one go.
#![warn(missing_docs)]

mod envfile;
mod error;
mod vars;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub use envfile::{parse as parse_env_file, Assignment};
pub use error::{ConfigError, EnvFileError, Problem};
pub use ipnet::IpNet;
pub use vars::{closest, markdown, spec, Service, VarSpec, DERIVED, VARIABLES};

/// Environment variable naming the env file to read, for running outside containers.
pub const CONFIG_FILE_VAR: &str = "SNIKKET_CONFIG_FILE";

/// The XMPP domain in both forms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Domain {
    /// As the operator wrote it (Unicode, lower-cased).
    pub unicode: String,
    /// IDNA/punycode form used in DNS, certificates and file paths (`DOMAIN_ASCII`).
    pub ascii: String,
}

/// Log verbosity (`SNIKKET_LOGLEVEL`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    /// Only errors.
    Error,
    /// Errors and warnings.
    Warn,
    /// Lifecycle events (default).
    Info,
    /// Per-session detail.
    Debug,
    /// Wire dumps; development only.
    Trace,
}

impl LogLevel {
    /// The `tracing` filter directive for this level.
    pub fn as_filter(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

/// Mozilla TLS profile for XMPP and TURN (`SNIKKET_TLS_PROFILE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsProfile {
    /// TLS 1.3 only.
    Modern,
    /// TLS 1.2 and 1.3 with AEAD ciphers.
    Intermediate,
    /// Everything the TLS library supports (TLS 1.2 and 1.3); `legacy` maps here too.
    Old,
}

/// Outgoing mail settings parsed from `SNIKKET_SMTP_URL`.
#[derive(Clone, PartialEq, Eq)]
pub struct Smtp {
    /// Mail server host.
    pub host: String,
    /// Mail server port.
    pub port: u16,
    /// `smtps://`: TLS from the first byte.
    pub implicit_tls: bool,
    /// STARTTLS/TLS used at all (`;no-tls` turns it off).
    pub tls: bool,
    /// Certificate verification (`;insecure` turns it off).
    pub verify_certificate: bool,
    /// Login name, if any.
    pub user: Option<String>,
    /// Login password, if any; never printed.
    pub password: Option<String>,
}

impl std::fmt::Debug for Smtp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Smtp")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("implicit_tls", &self.implicit_tls)
            .field("tls", &self.tls)
            .field("verify_certificate", &self.verify_certificate)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .finish()
    }
}

/// What to do with the legacy `general@groups.DOMAIN` room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GeneralMuc {
    /// Keep it but make it non-public.
    Hidden,
    /// Destroy it.
    Destroyed,
}

/// Database selection.
#[derive(Clone, PartialEq, Eq)]
pub enum Database {
    /// SQLite file.
    Sqlite(PathBuf),
    /// PostgreSQL connection URL (may contain a password; never printed).
    Postgres(String),
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Database::Sqlite(p) => write!(f, "Sqlite({})", p.display()),
            Database::Postgres(_) => write!(f, "Postgres(***)"),
        }
    }
}

/// Settings of the XMPP server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Days archives, uploads and self-deleted accounts are kept.
    pub retention_days: u32,
    /// Global upload quota in bytes, if any.
    pub upload_storage_bytes: Option<u64>,
    /// Per-user rolling daily upload quota in bytes, if any.
    pub daily_upload_limit_bytes: Option<u64>,
    /// Maximum sessions per account.
    pub max_user_clients: u32,
    /// Periodic update check enabled.
    pub update_check: bool,
    /// XEP-0157 abuse address.
    pub abuse_email: Option<String>,
    /// XEP-0157 security address.
    pub security_email: Option<String>,
    /// TLS profile for c2s/s2s.
    pub tls_profile: TlsProfile,
    /// XEP-0065 proxy port.
    pub proxy65_port: u16,
    /// Invite landing page template containing `{invite.token}`.
    pub invite_url: String,
    /// Outgoing mail.
    pub smtp: Smtp,
    /// Client port with STARTTLS.
    pub c2s_port: u16,
    /// Client port with direct TLS.
    pub c2s_direct_tls_port: u16,
    /// Server-to-server port.
    pub s2s_port: u16,
    /// Fixed addresses for remote domains (`domain` → `host:port`), consulted before DNS.
    pub s2s_routes: Vec<(String, String)>,
    /// Extra CA certificates (PEM file) trusted for remote servers' certificates.
    pub s2s_cafile: Option<std::path::PathBuf>,
    /// Internal HTTP port (uploads, websocket, health).
    pub internal_http_port: u16,
    /// Internal HTTP addresses.
    pub internal_http_interfaces: Vec<IpAddr>,
    /// Admin gRPC port.
    pub grpc_port: u16,
    /// OpenMetrics endpoint on.
    pub prometheus: bool,
    /// DNSSEC/DANE required.
    pub dnssec: bool,
    /// File share on the main domain instead of `share.DOMAIN`.
    pub share_on_main_domain: bool,
    /// Legacy general room handling.
    pub general_muc: GeneralMuc,
    /// SASL2 with client ids required.
    pub require_sasl2: bool,
    /// Limited users restricted to subscribed contacts (v2 policy).
    pub restricted_users_v2: bool,
    /// Record s2s status.
    pub s2s_status: bool,
    /// Offer the HTTP CONNECT share proxy.
    pub share_proxy: bool,
    /// Experimental group chat features.
    pub gc3: bool,
    /// Database backend.
    pub database: Database,
    /// Hosting bootstrap invite, when its secret is configured.
    pub bootstrap: Option<Bootstrap>,
}

/// The hosting bootstrap admin invite (spec 4.7).
#[derive(Clone, PartialEq, Eq)]
pub struct Bootstrap {
    /// The secret in `?token=`; never printed.
    pub secret: String,
    /// Replay index.
    pub index: Option<u64>,
    /// Invite lifetime in seconds.
    pub ttl_secs: u64,
}

impl std::fmt::Debug for Bootstrap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bootstrap")
            .field("secret", &"***")
            .field("index", &self.index)
            .field("ttl_secs", &self.ttl_secs)
            .finish()
    }
}

/// Settings of the TURN server and of TURN as advertised by the XMPP server.
#[derive(Clone)]
pub struct TurnConfig {
    /// TURN enabled in this stack.
    pub enabled: bool,
    /// Host advertised to clients.
    pub domain: String,
    /// Whether `SNIKKET_TWEAK_TURNSERVER_DOMAIN` was set explicitly (external TURN).
    pub external_domain: bool,
    /// STUN/TURN UDP+TCP port.
    pub port: u16,
    /// TURN over TLS port, `None` when disabled.
    pub tls_port: Option<u16>,
    /// Secret override; `None` means the shared file.
    pub secret: Option<String>,
    /// Lowest relay port.
    pub min_port: u16,
    /// Highest relay port.
    pub max_port: u16,
    /// Internal address behind NAT.
    pub internal_ip: Option<IpAddr>,
    /// Peers allowed despite the default deny policy.
    pub allowed_peers: Vec<IpNet>,
    /// Allocations per user.
    pub user_quota: u32,
    /// Allocations in total, 0 = bounded only by the port range.
    pub total_quota: u32,
    /// Bytes per second per allocation, 0 = unlimited.
    pub max_bps: u64,
    /// Status gRPC port.
    pub grpc_port: u16,
}

impl std::fmt::Debug for TurnConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnConfig")
            .field("enabled", &self.enabled)
            .field("domain", &self.domain)
            .field("port", &self.port)
            .field("tls_port", &self.tls_port)
            .field("secret", &self.secret.as_ref().map(|_| "***"))
            .field("min_port", &self.min_port)
            .field("max_port", &self.max_port)
            .field("internal_ip", &self.internal_ip)
            .field("allowed_peers", &self.allowed_peers)
            .field("user_quota", &self.user_quota)
            .field("total_quota", &self.total_quota)
            .field("max_bps", &self.max_bps)
            .finish()
    }
}

impl TurnConfig {
    /// Number of simultaneous calls the relay port range supports (4 ports per call).
    pub fn calls_supported(&self) -> u32 {
        (u32::from(self.max_port) - u32::from(self.min_port) + 1) / 4
    }
}

/// Settings of the web proxy.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// Plain HTTP port.
    pub http_port: u16,
    /// HTTPS port.
    pub https_port: u16,
    /// Host of the server's internal HTTP.
    pub internal_http_host: String,
    /// Host of the portal.
    pub portal_host: String,
    /// TLS 1.2 allowed on HTTPS.
    pub tls12: bool,
    /// TLS 1.3 allowed on HTTPS.
    pub tls13: bool,
    /// OpenSSL cipher names requested for TLS 1.2.
    pub tls_ciphers: Vec<String>,
    /// Serve the `http` listener once certificates exist.
    pub serve_http: bool,
    /// Serve the `https` listener once certificates exist.
    pub serve_https: bool,
    /// Reverse proxies whose forwarding headers are trusted.
    pub trusted_proxies: Vec<IpNet>,
    /// Directory with HTTP-01 challenge files.
    pub acme_challenge_dir: PathBuf,
}

/// Settings of the certificate manager.
#[derive(Debug, Clone)]
pub struct CertsConfig {
    /// Contact the CA at all.
    pub acme: bool,
    /// ACME directory URL.
    pub directory_url: String,
    /// Extra trusted roots for the ACME server.
    pub ca_bundle: Option<PathBuf>,
    /// Keep the key across renewals.
    pub reuse_key: bool,
    /// Extra certbot options, split on whitespace.
    pub certbot_options: Vec<String>,
    /// Wait for HTTP before the first request.
    pub wait_for_http: bool,
    /// Error report DSN; never printed.
    pub report_dsn: Option<String>,
    /// Directory to write HTTP-01 challenge files to.
    pub acme_challenge_dir: PathBuf,
    /// Status gRPC port.
    pub grpc_port: u16,
}

/// Settings of the web portal.
#[derive(Clone)]
pub struct PortalConfig {
    /// Listen address.
    pub interface: IpAddr,
    /// Listen port.
    pub port: u16,
    /// Explicit session signing key; `None` means generated and kept in the data volume.
    pub secret_key: Option<String>,
    /// Avatar cache lifetime in seconds.
    pub avatar_cache_ttl: u32,
    /// UI languages, fallback first.
    pub languages: Vec<String>,
    /// iOS store link; `None` shows "coming soon".
    pub apple_store_url: Option<String>,
    /// Largest avatar upload in bytes.
    pub max_avatar_size: u32,
    /// Show system figures.
    pub show_metrics: bool,
    /// Terms of service link.
    pub tos_uri: Option<String>,
    /// Privacy policy link.
    pub privacy_uri: Option<String>,
    /// Abuse contact.
    pub abuse_email: Option<String>,
    /// Security contact.
    pub security_email: Option<String>,
}

impl std::fmt::Debug for PortalConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PortalConfig")
            .field("interface", &self.interface)
            .field("port", &self.port)
            .field("secret_key", &self.secret_key.as_ref().map(|_| "***"))
            .field("languages", &self.languages)
            .finish_non_exhaustive()
    }
}

/// The whole validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// `SNIKKET_DOMAIN` in both forms.
    pub domain: Domain,
    /// `SNIKKET_ADMIN_EMAIL`.
    pub admin_email: String,
    /// Display name of the service.
    pub site_name: String,
    /// Log level.
    pub log_level: LogLevel,
    /// IPv6 enabled.
    pub ipv6: bool,
    /// Root of persistent state.
    pub data_dir: PathBuf,
    /// File owner override.
    pub puid: Option<u32>,
    /// File group override.
    pub pgid: Option<u32>,
    /// Public listener addresses.
    pub bind_interfaces: Vec<IpAddr>,
    /// Internal gRPC address (always loopback).
    pub grpc_interface: IpAddr,
    /// XMPP server settings.
    pub server: ServerConfig,
    /// TURN settings.
    pub turn: TurnConfig,
    /// Web proxy settings.
    pub proxy: ProxyConfig,
    /// Certificate manager settings.
    pub certs: CertsConfig,
    /// Portal settings.
    pub portal: PortalConfig,
    /// Non-fatal findings (unknown names, odd but legal values) for the caller to log.
    pub warnings: Vec<String>,
}

impl Config {
    /// Reads the env file named by `file` (or by `SNIKKET_CONFIG_FILE`), overlays the process
    /// environment and validates the result.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let env: Vec<(String, String)> = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .collect();
        let from_env = env
            .iter()
            .find(|(k, _)| k == CONFIG_FILE_VAR)
            .map(|(_, v)| PathBuf::from(v));
        let file = file.map(Path::to_path_buf).or(from_env);
        let mut vars = BTreeMap::new();
        if let Some(path) = file {
            let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })?;
            let assignments = parse_env_file(&text).map_err(|source| ConfigError::Syntax {
                path: path.clone(),
                source,
            })?;
            for a in assignments {
                vars.insert(a.key, a.value);
            }
        }
        vars.extend(env);
        Config::from_vars(&vars)
    }

    /// Validates an already merged set of variables (environment over file).
    pub fn from_vars(vars: &BTreeMap<String, String>) -> Result<Config, ConfigError> {
        let r = Reader::new(vars);
        let config = read_all(&r);
        let (problems, mut warnings) = r.finish();
        if !problems.is_empty() {
            return Err(ConfigError::Invalid(problems));
        }
        let mut config = config.ok_or_else(|| ConfigError::Invalid(Vec::new()))?;
        warnings.append(&mut config.warnings);
        config.warnings = warnings;
        Ok(config)
    }

    /// Directory of the live certificate files in certbot's layout.
    pub fn cert_live_dir(&self) -> PathBuf {
        self.data_dir
            .join("letsencrypt")
            .join("live")
            .join(&self.domain.ascii)
    }

    /// The certbot configuration root (`/snikket/letsencrypt`).
    pub fn letsencrypt_dir(&self) -> PathBuf {
        self.data_dir.join("letsencrypt")
    }

    /// Flag file present while the last certificate attempt failed.
    pub fn has_errors_path(&self) -> PathBuf {
        self.letsencrypt_dir().join("has-errors")
    }

    /// The TURN REST shared secret file shared by the server and the TURN server.
    pub fn turn_secret_path(&self) -> PathBuf {
        self.data_dir.join("prosody").join("turn-auth-secret-v2")
    }

    /// The secret every internal gRPC call must present.
    pub fn grpc_secret_path(&self) -> PathBuf {
        self.data_dir.join("internal").join("grpc-secret")
    }

    /// The XMPP server's own state directory (database, uploads).
    pub fn server_dir(&self) -> PathBuf {
        self.data_dir.join("server")
    }

    /// `groups.DOMAIN` (ASCII form).
    pub fn groups_domain(&self) -> String {
        format!("groups.{}", self.domain.ascii)
    }

    /// `share.DOMAIN` (ASCII form).
    pub fn share_domain(&self) -> String {
        format!("share.{}", self.domain.ascii)
    }

    /// The invite landing page for `token`, from `SNIKKET_INVITE_URL`.
    pub fn invite_landing_url(&self, token: &str) -> String {
        self.server
            .invite_url
            .replace("{invite.token}", &url_escape(token))
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters (for a URL path segment).
pub fn url_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Collects values and problems; every `read_*` call records the name it read.
struct Reader<'a> {
    vars: &'a BTreeMap<String, String>,
    problems: Mutex<Vec<Problem>>,
    warnings: Mutex<Vec<String>>,
    read: Mutex<BTreeSet<&'static str>>,
}

impl<'a> Reader<'a> {
    fn new(vars: &'a BTreeMap<String, String>) -> Self {
        Reader {
            vars,
            problems: Mutex::new(Vec::new()),
            warnings: Mutex::new(Vec::new()),
            read: Mutex::new(BTreeSet::new()),
        }
    }

    fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        m.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The raw value; empty counts as unset, as in Snikket's shell and Lua defaults.
    fn raw(&self, name: &'static str) -> Option<&'a str> {
        debug_assert!(spec(name).is_some(), "{name} missing from VARIABLES");
        Self::lock(&self.read).insert(name);
        self.vars
            .get(name)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
    }

    fn problem(&self, name: &'static str, value: Option<&str>, message: impl Into<String>) {
        let secret = spec(name).is_some_and(|s| s.secret);
        Self::lock(&self.problems).push(Problem {
            var: name.to_string(),
            value: if secret {
                None
            } else {
                value.map(str::to_string)
            },
            message: message.into(),
        });
    }

    fn warn(&self, message: String) {
        Self::lock(&self.warnings).push(message);
    }

    fn string(&self, name: &'static str, default: &str) -> String {
        self.raw(name).unwrap_or(default).to_string()
    }

    fn opt(&self, name: &'static str) -> Option<String> {
        self.raw(name).map(str::to_string)
    }

    fn int<T>(&self, name: &'static str, default: T, min: T, max: T) -> T
    where
        T: std::str::FromStr + PartialOrd + Copy + std::fmt::Display,
    {
        let Some(v) = self.raw(name) else {
            return default;
        };
        match v.parse::<T>() {
            Ok(n) if n >= min && n <= max => n,
            _ => {
                self.problem(
                    name,
                    Some(v),
                    format!("must be an integer from {min} to {max}"),
                );
                default
            }
        }
    }

    fn opt_int<T>(&self, name: &'static str, min: T, max: T) -> Option<T>
    where
        T: std::str::FromStr + PartialOrd + Copy + std::fmt::Display,
    {
        let v = self.raw(name)?;
        match v.parse::<T>() {
            Ok(n) if n >= min && n <= max => Some(n),
            _ => {
                self.problem(
                    name,
                    Some(v),
                    format!("must be an integer from {min} to {max}"),
                );
                None
            }
        }
    }

    fn port(&self, name: &'static str, default: u16) -> u16 {
        self.int(name, default, 1, 65535)
    }

    fn flag(&self, name: &'static str, default: bool) -> bool {
        let Some(v) = self.raw(name) else {
            return default;
        };
        match v.to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => true,
            "0" | "false" | "no" | "off" => false,
            _ => {
                self.problem(name, Some(v), "must be 1 or 0 (true/false, yes/no, on/off)");
                default
            }
        }
    }

    fn choice<T: Copy>(&self, name: &'static str, default: T, options: &[(&str, T)]) -> T {
        let Some(v) = self.raw(name) else {
            return default;
        };
        if let Some((_, t)) = options.iter().find(|(o, _)| o.eq_ignore_ascii_case(v)) {
            return *t;
        }
        let names: Vec<&str> = options.iter().map(|(o, _)| *o).collect();
        self.problem(
            name,
            Some(v),
            format!("must be one of: {}", names.join(", ")),
        );
        default
    }

    fn gib_bytes(&self, name: &'static str) -> Option<u64> {
        let v = self.raw(name)?;
        match v.parse::<f64>() {
            Ok(gb) if gb.is_finite() && gb > 0.0 && gb < 1.0e9 => {
                // Rounded to whole bytes; the cast is in range by the check above.
                Some((gb * 1024.0 * 1024.0 * 1024.0).round() as u64)
            }
            _ => {
                self.problem(
                    name,
                    Some(v),
                    "must be a number of GiB greater than 0, e.g. 10 or 0.5",
                );
                None
            }
        }
    }

    fn url(&self, name: &'static str, https_only: bool) -> Option<String> {
        let v = self.raw(name)?;
        let ok = if https_only {
            v.starts_with("https://")
        } else {
            v.starts_with("https://") || v.starts_with("http://")
        };
        let rest = v.split_once("://").map(|(_, r)| r).unwrap_or("");
        if ok && !rest.is_empty() && !rest.starts_with('/') && !v.contains(char::is_whitespace) {
            Some(v.to_string())
        } else {
            let what = if https_only {
                "an https:// URL"
            } else {
                "an http:// or https:// URL"
            };
            self.problem(name, Some(v), format!("must be {what}"));
            None
        }
    }

    fn email(&self, name: &'static str) -> Option<String> {
        let v = self.raw(name)?;
        if valid_email(v) {
            Some(v.to_string())
        } else {
            self.problem(
                name,
                Some(v),
                "must be an e-mail address like admin@example.com",
            );
            None
        }
    }

    fn ip(&self, name: &'static str, default: Option<IpAddr>) -> Option<IpAddr> {
        let Some(v) = self.raw(name) else {
            return default;
        };
        match v.trim_matches(['[', ']']).parse() {
            Ok(ip) => Some(ip),
            Err(_) => {
                self.problem(name, Some(v), "must be an IPv4 or IPv6 address");
                default
            }
        }
    }

    fn ip_list(&self, name: &'static str, default: &str) -> Vec<IpAddr> {
        let v = self.raw(name).unwrap_or(default);
        let mut out = Vec::new();
        for part in split_list(v) {
            let part = if part == "*" { "0.0.0.0" } else { part };
            match part.trim_matches(['[', ']']).parse() {
                Ok(ip) => out.push(ip),
                Err(_) => {
                    self.problem(
                        name,
                        Some(v),
                        format!("must be IP addresses separated by spaces or commas; {part:?} is not one"),
                    );
                    return Vec::new();
                }
            }
        }
        if out.is_empty() {
            self.problem(name, Some(v), "must name at least one IP address");
        }
        out
    }

    fn net_list(&self, name: &'static str) -> Vec<IpNet> {
        let Some(v) = self.raw(name) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for part in split_list(v) {
            let parsed = part.parse::<IpNet>().or_else(|_| {
                part.trim_matches(['[', ']'])
                    .parse::<IpAddr>()
                    .map(IpNet::from)
            });
            match parsed {
                Ok(net) => out.push(net),
                Err(_) => {
                    self.problem(
                        name,
                        Some(v),
                        format!("must be IP addresses or CIDR ranges (like 10.0.0.0/8); {part:?} is not one"),
                    );
                    return Vec::new();
                }
            }
        }
        out
    }

    fn finish(self) -> (Vec<Problem>, Vec<String>) {
        let read = self.read.into_inner().unwrap_or_else(|e| e.into_inner());
        let mut warnings = self
            .warnings
            .into_inner()
            .unwrap_or_else(|e| e.into_inner());
        for name in self.vars.keys() {
            let ours = name.starts_with("SNIKKET_") || name.starts_with("TWEAK_SNIKKET_");
            if !ours || name == CONFIG_FILE_VAR || DERIVED.contains(&name.as_str()) {
                continue;
            }
            if spec(name).is_none() {
                match closest(name) {
                    Some(c) => warnings.push(format!("unknown variable {name}; did you mean {c}?")),
                    None => warnings.push(format!("unknown variable {name} is ignored")),
                }
            }
        }
        debug_assert!(
            VARIABLES.iter().all(|v| read.contains(v.name)),
            "a documented variable is never read"
        );
        let problems = self
            .problems
            .into_inner()
            .unwrap_or_else(|e| e.into_inner());
        (problems, warnings)
    }
}

fn split_list(v: &str) -> impl Iterator<Item = &str> {
    v.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
}

fn valid_email(v: &str) -> bool {
    let Some((local, host)) = v.rsplit_once('@') else {
        return false;
    };
    !local.is_empty()
        && host.contains('.')
        && !host.starts_with('.')
        && !host.ends_with('.')
        && !v.contains(char::is_whitespace)
        && !v.contains(['<', '>', ',', ';'])
}

fn parse_domain(v: &str) -> Result<Domain, &'static str> {
    if v.contains("://") || v.contains(['/', ':', '@', ' ']) {
        return Err(
            "must be a bare domain name like chat.example.com (no scheme, port, path or user)",
        );
    }
    let v = v.trim_end_matches('.');
    let ascii = idna::domain_to_ascii(v).map_err(|_| "must be a valid domain name")?;
    if ascii.is_empty() || ascii.len() > 253 {
        return Err("must be a valid domain name of at most 253 characters");
    }
    if ascii.parse::<IpAddr>().is_ok() {
        return Err("must be a domain name, not an IP address");
    }
    for label in ascii.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !ok {
            return Err(
                "must be a valid domain name (letters, digits and '-' in dot-separated labels)",
            );
        }
    }
    let (unicode, res) = idna::domain_to_unicode(&ascii);
    if res.is_err() {
        return Err("must be a valid domain name");
    }
    Ok(Domain { unicode, ascii })
}

fn parse_smtp(v: &str) -> Result<Smtp, &'static str> {
    const FORM: &str = "must look like smtp[s]://[user[:password]@]host[:port]/[;no-tls|;insecure]";
    let (scheme, rest) = v.split_once("://").ok_or(FORM)?;
    let implicit_tls = match scheme {
        "smtp" => false,
        "smtps" => true,
        _ => return Err(FORM),
    };
    let (authority, tail) = rest.split_once('/').unwrap_or((rest, ""));
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    let (user, password) = match userinfo {
        Some(u) => match u.split_once(':') {
            Some((a, b)) => (Some(a.to_string()), Some(b.to_string())),
            None => (Some(u.to_string()), None),
        },
        None => (None, None),
    };
    let default_port = if implicit_tls { 465 } else { 25 };
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || hostport.starts_with('[') => {
            (h, p.parse::<u16>().ok().filter(|p| *p > 0).ok_or(FORM)?)
        }
        _ => (hostport, default_port),
    };
    if host.is_empty() {
        return Err(FORM);
    }
    let mut tls = true;
    let mut verify = true;
    for opt in tail.split(';').filter(|s| !s.is_empty()) {
        match opt {
            "no-tls" => tls = false,
            "insecure" => verify = false,
            _ => return Err(FORM),
        }
    }
    Ok(Smtp {
        host: host.trim_matches(['[', ']']).to_string(),
        port,
        implicit_tls,
        tls,
        verify_certificate: verify,
        user,
        password,
    })
}

const DEFAULT_CIPHERS: &str = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:DHE-RSA-CHACHA20-POLY1305";

/// Cipher names (OpenSSL spelling) that rustls implements for TLS 1.2.
pub const KNOWN_TLS12_CIPHERS: &[&str] = &[
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305",
    "ECDHE-RSA-CHACHA20-POLY1305",
];

fn read_all(r: &Reader<'_>) -> Option<Config> {
    let domain = match r.raw("SNIKKET_DOMAIN") {
        None => {
            r.problem("SNIKKET_DOMAIN", None, "required");
            None
        }
        Some(v) => match parse_domain(&v.to_lowercase()) {
            Ok(d) => Some(d),
            Err(msg) => {
                r.problem("SNIKKET_DOMAIN", Some(v), msg);
                None
            }
        },
    };
    let admin_email = match r.raw("SNIKKET_ADMIN_EMAIL") {
        None => {
            r.problem("SNIKKET_ADMIN_EMAIL", None, "required");
            None
        }
        Some(_) => r.email("SNIKKET_ADMIN_EMAIL"),
    };
    let domain_text = domain
        .as_ref()
        .map(|d| d.unicode.clone())
        .unwrap_or_default();
    let ascii = domain.as_ref().map(|d| d.ascii.clone()).unwrap_or_default();
    let site_name = r.string("SNIKKET_SITE_NAME", &domain_text);
    let log_level = r.choice(
        "SNIKKET_LOGLEVEL",
        LogLevel::Info,
        &[
            ("error", LogLevel::Error),
            ("warn", LogLevel::Warn),
            ("info", LogLevel::Info),
            ("debug", LogLevel::Debug),
            ("trace", LogLevel::Trace),
        ],
    );
    let ipv6 = r.flag("SNIKKET_TWEAK_IPV6", true);
    let data_dir = PathBuf::from(r.string("SNIKKET_TWEAK_DATA_DIR", "/snikket"));
    if !data_dir.is_absolute() {
        r.problem(
            "SNIKKET_TWEAK_DATA_DIR",
            data_dir.to_str(),
            "must be an absolute path",
        );
    }
    let puid = r.opt_int::<u32>("PUID", 0, u32::MAX - 1);
    let pgid = r.opt_int::<u32>("PGID", 0, u32::MAX - 1);
    let mut bind_interfaces = r.ip_list("SNIKKET_TWEAK_BIND_INTERFACES", "0.0.0.0 ::");
    if !ipv6 {
        bind_interfaces.retain(IpAddr::is_ipv4);
    }
    let grpc_interface = r
        .ip(
            "SNIKKET_TWEAK_GRPC_INTERFACE",
            Some(IpAddr::from([127, 0, 0, 1])),
        )
        .unwrap_or(IpAddr::from([127, 0, 0, 1]));
    if !grpc_interface.is_loopback() {
        r.problem(
            "SNIKKET_TWEAK_GRPC_INTERFACE",
            Some(&grpc_interface.to_string()),
            "must be a loopback address (127.0.0.0/8 or ::1): internal APIs are never exposed",
        );
    }

    // Server.
    let retention_days = r.int("SNIKKET_RETENTION_DAYS", 7u32, 1, 36500);
    let upload_storage_bytes = r.gib_bytes("SNIKKET_UPLOAD_STORAGE_GB");
    let daily_upload_limit_bytes = r.gib_bytes("SNIKKET_DAILY_UPLOAD_LIMIT_PER_USER_GB");
    let max_user_clients = r.int("SNIKKET_MAX_USER_CLIENTS", 10u32, 1, 1000);
    let update_check = r.flag("SNIKKET_UPDATE_CHECK", true);
    let abuse_email = r.email("SNIKKET_ABUSE_EMAIL");
    let security_email = r.email("SNIKKET_SECURITY_EMAIL");
    let tls_profile = r.choice(
        "SNIKKET_TLS_PROFILE",
        TlsProfile::Modern,
        &[
            ("modern", TlsProfile::Modern),
            ("intermediate", TlsProfile::Intermediate),
            ("old", TlsProfile::Old),
            ("legacy", TlsProfile::Old),
        ],
    );
    let proxy65_port = r.port("SNIKKET_PROXY65_PORT", 5000);
    let https_port = r.port("SNIKKET_TWEAK_HTTPS_PORT", 443);
    let default_invite = if https_port == 443 {
        format!("https://{ascii}/invite/{{invite.token}}/")
    } else {
        format!("https://{ascii}:{https_port}/invite/{{invite.token}}/")
    };
    let invite_url = r.url("SNIKKET_INVITE_URL", false).unwrap_or(default_invite);
    if !invite_url.contains("{invite.token}") {
        r.warn(format!(
            "SNIKKET_INVITE_URL={invite_url:?} has no {{invite.token}}: every invite link will be the same page"
        ));
    }
    let smtp_text = r.string("SNIKKET_SMTP_URL", "smtp://localhost:1025/;no-tls");
    let smtp = match parse_smtp(&smtp_text) {
        Ok(s) => Some(s),
        Err(msg) => {
            r.problem("SNIKKET_SMTP_URL", None, msg);
            None
        }
    };
    let c2s_port = r.port("SNIKKET_TWEAK_C2S_PORT", 5222);
    let c2s_direct_tls_port = r.port("SNIKKET_TWEAK_C2S_DIRECT_TLS_PORT", 5223);
    let s2s_port = r.port("SNIKKET_TWEAK_S2S_PORT", 5269);
    let s2s_routes = match r.raw("SNIKKET_TWEAK_S2S_ROUTES") {
        None => Vec::new(),
        Some(v) => match parse_routes(v) {
            Ok(routes) => routes,
            Err(msg) => {
                r.problem("SNIKKET_TWEAK_S2S_ROUTES", Some(v), msg);
                Vec::new()
            }
        },
    };
    let s2s_cafile = r
        .opt("SNIKKET_TWEAK_S2S_CAFILE")
        .map(std::path::PathBuf::from);
    let internal_http_port = r.port("SNIKKET_TWEAK_INTERNAL_HTTP_PORT", 5280);
    let mut internal_http_interfaces =
        r.ip_list("SNIKKET_TWEAK_INTERNAL_HTTP_INTERFACE", "127.0.0.1,::1");
    if !ipv6 {
        internal_http_interfaces.retain(IpAddr::is_ipv4);
    }
    let server_grpc_port = r.port("SNIKKET_TWEAK_SERVER_GRPC_PORT", 5290);
    let prometheus = r.flag("SNIKKET_TWEAK_PROMETHEUS", false);
    let dnssec = r.flag("SNIKKET_TWEAK_DNSSEC", false);
    if dnssec {
        r.warn("SNIKKET_TWEAK_DNSSEC=1: DANE is not implemented; federation checks peers' certificates against certificate authorities only".into());
    }
    r.choice(
        "SNIKKET_TWEAK_STORAGE",
        (),
        &[("files", ()), ("sqlite", ())],
    );
    if r.raw("SNIKKET_TWEAK_EXTRA_CONFIG").is_some() {
        r.warn("SNIKKET_TWEAK_EXTRA_CONFIG is set but Prosody configuration files do not apply to this server; it is ignored".into());
    }
    let share_on_main_domain = r.flag("SNIKKET_TWEAK_SHARE_DOMAIN", false);
    let general_muc = r.choice(
        "SNIKKET_TWEAK_GENERAL_MUC",
        GeneralMuc::Hidden,
        &[
            ("hidden", GeneralMuc::Hidden),
            ("destroyed", GeneralMuc::Destroyed),
        ],
    );
    let require_sasl2 = r.flag("SNIKKET_TWEAK_REQUIRE_SASL2", false);
    let restricted_users_v2 = r.flag("SNIKKET_TWEAK_RESTRICTED_USERS_V2", false);
    let s2s_status = r.flag("SNIKKET_TWEAK_S2S_STATUS", false);
    let share_proxy = r.flag("SNIKKET_TWEAK_SHARE_PROXY", false);
    let gc3 = r.flag("SNIKKET_TWEAK_GC3", false);
    let _ = r.raw("SNIKKET_TWEAK_PUSH2");
    let _ = r.raw("SNIKKET_LETSENCRYPT_TOS_AGREE");
    let database = match r.raw("SNIKKET_TWEAK_DATABASE_URL") {
        None => Some(Database::Sqlite(
            data_dir.join("server").join("snikket.sqlite"),
        )),
        Some(v) if v.starts_with("postgres://") || v.starts_with("postgresql://") => {
            Some(Database::Postgres(v.to_string()))
        }
        Some(v) => match v
            .strip_prefix("sqlite://")
            .or_else(|| v.strip_prefix("sqlite:"))
        {
            Some(path) if Path::new(path).is_absolute() => {
                Some(Database::Sqlite(PathBuf::from(path)))
            }
            _ => {
                r.problem(
                    "SNIKKET_TWEAK_DATABASE_URL",
                    None,
                    "must be sqlite:///absolute/path.sqlite or postgres://user:password@host/database",
                );
                None
            }
        },
    };
    let bootstrap_secret = r.opt("TWEAK_SNIKKET_BOOTSTRAP_SECRET");
    let bootstrap_index = r.opt_int::<u64>("TWEAK_SNIKKET_BOOTSTRAP_INDEX", 0, u64::MAX / 2);
    let bootstrap_ttl = r.int("TWEAK_SNIKKET_BOOTSTRAP_TTL", 2_419_200u64, 60, 31_536_000);
    let bootstrap = bootstrap_secret.map(|secret| Bootstrap {
        secret,
        index: bootstrap_index,
        ttl_secs: bootstrap_ttl,
    });

    // TURN.
    let turn_enabled = r.flag("SNIKKET_TWEAK_TURNSERVER", true);
    let turn_domain_set = r.raw("SNIKKET_TWEAK_TURNSERVER_DOMAIN");
    let turn_domain = match turn_domain_set {
        Some(v) => match parse_domain(&v.to_lowercase()) {
            Ok(d) => d.ascii,
            Err(msg) => {
                r.problem("SNIKKET_TWEAK_TURNSERVER_DOMAIN", Some(v), msg);
                String::new()
            }
        },
        None => ascii.clone(),
    };
    let turn_port = r.port("SNIKKET_TWEAK_TURNSERVER_PORT", 3478);
    let turn_tls_port = r.int("SNIKKET_TWEAK_TURNSERVER_TLS_PORT", 5349u16, 0, 65535);
    let turn_secret = r.opt("SNIKKET_TWEAK_TURNSERVER_SECRET");
    let relay_range = "must be an integer with 1024 < port ≤ 65535";
    let min_port = r.int("SNIKKET_TWEAK_TURNSERVER_MIN_PORT", 49152u16, 1025, 65535);
    let max_port = r.int("SNIKKET_TWEAK_TURNSERVER_MAX_PORT", 65535u16, 1025, 65535);
    // Replace the generic range message with the documented one for the relay ports.
    {
        let mut problems = Reader::lock(&r.problems);
        for p in problems.iter_mut() {
            if p.var == "SNIKKET_TWEAK_TURNSERVER_MIN_PORT"
                || p.var == "SNIKKET_TWEAK_TURNSERVER_MAX_PORT"
            {
                p.message = relay_range.to_string();
            }
        }
    }
    let min_ok = !Reader::lock(&r.problems)
        .iter()
        .any(|p| p.var.starts_with("SNIKKET_TWEAK_TURNSERVER_M"));
    if min_ok && min_port > max_port {
        r.problem(
            "SNIKKET_TWEAK_TURNSERVER_MIN_PORT",
            Some(&min_port.to_string()),
            format!("must not be greater than SNIKKET_TWEAK_TURNSERVER_MAX_PORT ({max_port})"),
        );
    } else if min_ok && min_port < 40000 && turn_enabled {
        r.warn(format!(
            "SNIKKET_TWEAK_TURNSERVER_MIN_PORT={min_port} is below 40000: relay ports may collide with other services' ports"
        ));
    }
    let internal_ip = r.ip("SNIKKET_TWEAK_TURNSERVER_INTERNAL_IP", None);
    let allowed_peers = r.net_list("SNIKKET_TWEAK_TURNSERVER_ALLOWED_PEERS");
    let user_quota = r.int("SNIKKET_TWEAK_TURNSERVER_USER_QUOTA", 12u32, 1, 10_000);
    let total_quota = r.int("SNIKKET_TWEAK_TURNSERVER_TOTAL_QUOTA", 0u32, 0, 1_000_000);
    let max_bps = r.int(
        "SNIKKET_TWEAK_TURNSERVER_MAX_BPS",
        1_250_000u64,
        0,
        1_000_000_000_000,
    );
    let turn_grpc_port = r.port("SNIKKET_TWEAK_TURN_GRPC_PORT", 5292);

    // Proxy.
    let http_port = r.port("SNIKKET_TWEAK_HTTP_PORT", 80);
    let internal_http_host = r.string("SNIKKET_TWEAK_INTERNAL_HTTP_HOST", "localhost");
    let portal_host = r.string("SNIKKET_TWEAK_PORTAL_INTERNAL_HTTP_HOST", "localhost");
    let versions = r.string("SNIKKET_TWEAK_HTTP_TLS_VERSIONS", "TLSv1.2 TLSv1.3");
    let (mut tls12, mut tls13) = (false, false);
    for v in split_list(&versions) {
        match v {
            "TLSv1.2" => tls12 = true,
            "TLSv1.3" => tls13 = true,
            "TLSv1" | "TLSv1.1" | "SSLv3" => r.warn(format!(
                "SNIKKET_TWEAK_HTTP_TLS_VERSIONS: {v} is not supported and is ignored"
            )),
            other => {
                r.problem(
                    "SNIKKET_TWEAK_HTTP_TLS_VERSIONS",
                    Some(&versions),
                    format!("must list TLSv1.2 and/or TLSv1.3; {other:?} is unknown"),
                );
            }
        }
    }
    if !tls12 && !tls13 {
        r.problem(
            "SNIKKET_TWEAK_HTTP_TLS_VERSIONS",
            Some(&versions),
            "must enable at least one of TLSv1.2, TLSv1.3",
        );
    }
    let ciphers_text = r.string("SNIKKET_TWEAK_HTTP_TLS_CIPHERS", DEFAULT_CIPHERS);
    let tls_ciphers: Vec<String> = ciphers_text
        .split(':')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(str::to_string)
        .collect();
    if tls12
        && !tls_ciphers
            .iter()
            .any(|c| KNOWN_TLS12_CIPHERS.contains(&c.as_str()))
    {
        r.problem(
            "SNIKKET_TWEAK_HTTP_TLS_CIPHERS",
            Some(&ciphers_text),
            format!(
                "must include at least one of {}",
                KNOWN_TLS12_CIPHERS.join(":")
            ),
        );
    }
    let protos = r.string("SNIKKET_TWEAK_WEB_PROXY_PROTOS", "http https");
    let (mut serve_http, mut serve_https) = (false, false);
    for p in split_list(&protos) {
        match p {
            "http" => serve_http = true,
            "https" => serve_https = true,
            other => r.problem(
                "SNIKKET_TWEAK_WEB_PROXY_PROTOS",
                Some(&protos),
                format!("must list http and/or https; {other:?} is unknown"),
            ),
        }
    }
    let _ = r.raw("SNIKKET_TWEAK_WEB_PROXY_RELOAD_INTERVAL");
    let trusted_proxies = r.net_list("SNIKKET_TWEAK_TRUSTED_PROXIES");
    let challenge_override = r.opt("SNIKKET_TWEAK_ACME_CHALLENGE_DIR").map(PathBuf::from);

    // Certs.
    let acme = r.flag("SNIKKET_TWEAK_ACME", true);
    let directory_url = r
        .url("SNIKKET_TWEAK_ACME_DIRECTORY_URL", true)
        .unwrap_or_else(|| "https://acme-v02.api.letsencrypt.org/directory".to_string());
    let ca_bundle = r.opt("SNIKKET_TWEAK_ACME_CA_BUNDLE").map(PathBuf::from);
    let reuse_key = r.choice(
        "SNIKKET_CERTBOT_KEY_OPTIONS",
        true,
        &[("--reuse-key", true), ("--no-reuse-key", false)],
    );
    let certbot_options: Vec<String> = r
        .opt("SNIKKET_CERTBOT_OPTIONS")
        .map(|s| s.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default();
    let wait_for_http = r.flag("SNIKKET_CERTS_WAIT", false);
    let report_dsn = r.opt("REPORT_DSN");
    let certs_grpc_port = r.port("SNIKKET_TWEAK_CERTS_GRPC_PORT", 5291);

    // Portal.
    let portal_interface = r
        .ip(
            "SNIKKET_TWEAK_PORTAL_INTERNAL_HTTP_INTERFACE",
            Some(IpAddr::from([127, 0, 0, 1])),
        )
        .unwrap_or(IpAddr::from([127, 0, 0, 1]));
    let portal_port = r.port("SNIKKET_TWEAK_PORTAL_INTERNAL_HTTP_PORT", 5765);
    let secret_key = r.opt("SNIKKET_WEB_SECRET_KEY");
    if secret_key.as_ref().is_some_and(|k| k.len() < 16) {
        r.problem(
            "SNIKKET_WEB_SECRET_KEY",
            None,
            "must be at least 16 characters long",
        );
    }
    let avatar_cache_ttl = r.int("SNIKKET_WEB_AVATAR_CACHE_TTL", 1800u32, 0, 31_536_000);
    let languages: Vec<String> = split_list(&r.string(
        "SNIKKET_WEB_LANGUAGES",
        "en da de fr id it pl ru sv uk zh_Hans_CN",
    ))
    .map(str::to_string)
    .collect();
    let apple_store_url = match r.raw("SNIKKET_WEB_APPLE_STORE_URL") {
        None if r.vars.contains_key("SNIKKET_WEB_APPLE_STORE_URL") => None,
        None => Some("https://apps.apple.com/us/app/snikket/id1545164189".to_string()),
        Some(_) => r.url("SNIKKET_WEB_APPLE_STORE_URL", false),
    };
    let max_avatar_size = r.int(
        "SNIKKET_WEB_MAX_AVATAR_SIZE",
        1_048_576u32,
        1024,
        16_777_216,
    );
    let show_metrics = r.flag("SNIKKET_WEB_SHOW_METRICS", true);
    let tos_uri = r.url("SNIKKET_TOS_URI", false);
    let privacy_uri = r.url("SNIKKET_PRIVACY_URI", false);

    let config = Config {
        domain: domain?,
        admin_email: admin_email?,
        site_name,
        log_level,
        ipv6,
        data_dir,
        puid,
        pgid,
        bind_interfaces,
        grpc_interface,
        server: ServerConfig {
            retention_days,
            upload_storage_bytes,
            daily_upload_limit_bytes,
            max_user_clients,
            update_check,
            abuse_email: abuse_email.clone(),
            security_email: security_email.clone(),
            tls_profile,
            proxy65_port,
            invite_url,
            smtp: smtp?,
            c2s_port,
            c2s_direct_tls_port,
            s2s_port,
            s2s_routes,
            s2s_cafile,
            internal_http_port,
            internal_http_interfaces,
            grpc_port: server_grpc_port,
            prometheus,
            dnssec,
            share_on_main_domain,
            general_muc,
            require_sasl2,
            restricted_users_v2,
            s2s_status,
            share_proxy,
            gc3,
            database: database?,
            bootstrap,
        },
        turn: TurnConfig {
            enabled: turn_enabled,
            domain: turn_domain,
            external_domain: turn_domain_set.is_some(),
            port: turn_port,
            tls_port: (turn_tls_port != 0).then_some(turn_tls_port),
            secret: turn_secret,
            min_port,
            max_port,
            internal_ip,
            allowed_peers,
            user_quota,
            total_quota,
            max_bps,
            grpc_port: turn_grpc_port,
        },
        proxy: ProxyConfig {
            http_port,
            https_port,
            internal_http_host,
            portal_host,
            tls12,
            tls13,
            tls_ciphers,
            serve_http,
            serve_https,
            trusted_proxies,
            acme_challenge_dir: challenge_override
                .clone()
                .unwrap_or_else(|| PathBuf::from("/var/www/html/.well-known/acme-challenge")),
        },
        certs: CertsConfig {
            acme,
            directory_url,
            ca_bundle,
            reuse_key,
            certbot_options,
            wait_for_http,
            report_dsn,
            acme_challenge_dir: challenge_override
                .unwrap_or_else(|| PathBuf::from("/var/www/.well-known/acme-challenge")),
            grpc_port: certs_grpc_port,
        },
        portal: PortalConfig {
            interface: portal_interface,
            port: portal_port,
            secret_key,
            avatar_cache_ttl,
            languages,
            apple_store_url,
            max_avatar_size,
            show_metrics,
            tos_uri,
            privacy_uri,
            abuse_email,
            security_email,
        },
        warnings: Vec::new(),
    };
    Some(config)
}

#[cfg(test)]
mod tests;

/// Parses `domain=host:port` pairs separated by commas or spaces.
fn parse_routes(v: &str) -> Result<Vec<(String, String)>, String> {
    let mut routes = Vec::new();
    for pair in v.split([',', ' ']).filter(|p| !p.is_empty()) {
        let bad = || format!("{pair:?} is not domain=host:port (pairs separated by commas)");
        let (domain, addr) = pair.split_once('=').ok_or_else(bad)?;
        let (host, port) = addr.rsplit_once(':').ok_or_else(bad)?;
        let port_ok = port.parse::<u16>().is_ok_and(|p| p > 0);
        if domain.is_empty() || host.is_empty() || !port_ok {
            return Err(bad());
        }
        routes.push((domain.to_ascii_lowercase(), addr.to_string()));
    }
    Ok(routes)
}
