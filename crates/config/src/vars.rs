//! The table of every configuration variable: name, default, users and meaning.
//!
//! This table is the documentation: `docs/config.md` is generated from it, unknown `SNIKKET_*`
//! names are matched against it for typo suggestions, and a test checks that every variable the
//! parser reads is listed here (and nothing listed is left unread).

/// Which services read a variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// The XMPP server container (`snikket`).
    Server,
    /// The web proxy container (`snikket-proxy`).
    Proxy,
    /// The certificate manager container (`snikket-certs`).
    Certs,
    /// The web portal container (`snikket-portal`).
    Portal,
    /// The TURN server container (`snikket-turn`).
    Turn,
}

impl Service {
    /// The short name used in the documentation table.
    pub fn label(self) -> &'static str {
        match self {
            Service::Server => "server",
            Service::Proxy => "proxy",
            Service::Certs => "certs",
            Service::Portal => "portal",
            Service::Turn => "turn",
        }
    }
}

/// One documented variable.
#[derive(Debug, Clone, Copy)]
pub struct VarSpec {
    /// The environment variable name, exactly as Snikket spells it.
    pub name: &'static str,
    /// The default as shown to an operator (empty: unset).
    pub default: &'static str,
    /// The services that read it.
    pub used_by: &'static [Service],
    /// What it does and what values it accepts.
    pub doc: &'static str,
    /// Values of secret variables are never echoed in errors or logs.
    pub secret: bool,
}

use Service::{Certs, Portal, Proxy, Server, Turn};

const ALL: &[Service] = &[Server, Proxy, Certs, Portal, Turn];

macro_rules! var {
    ($name:literal, $default:literal, $used:expr, $doc:literal) => {
        VarSpec {
            name: $name,
            default: $default,
            used_by: $used,
            doc: $doc,
            secret: false,
        }
    };
    ($name:literal, $default:literal, $used:expr, $doc:literal, secret) => {
        VarSpec {
            name: $name,
            default: $default,
            used_by: $used,
            doc: $doc,
            secret: true,
        }
    };
}

/// Every variable any service reads, in documentation order.
pub const VARIABLES: &[VarSpec] = &[
    // Core, user-facing (spec 2.1).
    var!("SNIKKET_DOMAIN", "", ALL, "Required. The XMPP domain and web host; `groups.` and `share.` subdomains are derived from it. Internationalised names are accepted and converted to their ASCII (punycode) form where DNS needs it. Do not change it after the first start."),
    var!("SNIKKET_ADMIN_EMAIL", "", &[Server, Certs], "Required. The administrator's e-mail address; used as the ACME (Let's Encrypt) account contact."),
    var!("SNIKKET_SITE_NAME", "SNIKKET_DOMAIN", &[Server, Portal], "The service's display name: server vCard, portal titles, invite pages and the name of the default circle when it is first created."),
    var!("SNIKKET_RETENTION_DAYS", "7", &[Server], "Days that message archives, uploaded files and self-deleted accounts are kept. An integer from 1 to 36500."),
    var!("SNIKKET_UPLOAD_STORAGE_GB", "", &[Server], "Total storage for shared files in GiB (fractions allowed, greater than 0). Unset means unlimited; when reached, uploads fail with \"Server global storage quota reached\"."),
    var!("SNIKKET_DAILY_UPLOAD_LIMIT_PER_USER_GB", "", &[Server], "Rolling 24-hour upload quota per user in GiB (fractions allowed, greater than 0). Unset means ten times the maximum file size (about 1000 MiB)."),
    var!("SNIKKET_MAX_USER_CLIENTS", "10", &[Server], "Maximum simultaneous sessions per account (1 to 1000); the next one is refused with \"Too many active connections to this account\"."),
    var!("SNIKKET_LOGLEVEL", "info", ALL, "Log level: `error`, `warn`, `info` or `debug` (`trace` is accepted for development)."),
    var!("SNIKKET_UPDATE_CHECK", "1", &[Server], "`0` disables the periodic check for new releases."),
    var!("SNIKKET_ABUSE_EMAIL", "", &[Server, Portal], "Address published for abuse reports (XEP-0157) and on the portal's policies page."),
    var!("SNIKKET_SECURITY_EMAIL", "", &[Server, Portal], "Address published for security reports (XEP-0157) and in `/.well-known/security.txt`."),
    var!("SNIKKET_TOS_URI", "", &[Portal], "Terms of service URL; `/terms` redirects to it. An `http://` or `https://` URL."),
    var!("SNIKKET_PRIVACY_URI", "", &[Portal], "Privacy policy URL; `/privacy` redirects to it. An `http://` or `https://` URL."),
    var!("SNIKKET_TLS_PROFILE", "modern", &[Server, Turn], "TLS profile for XMPP and TURN-over-TLS: `modern` (TLS 1.3 only), `intermediate` (TLS 1.2 and 1.3, AEAD ciphers), `old` or `legacy` (the oldest TLS our library supports, 1.2)."),
    var!("SNIKKET_PROXY65_PORT", "5000", &[Server], "Port of the XEP-0065 file transfer proxy (1 to 65535)."),
    var!("SNIKKET_INVITE_URL", "https://DOMAIN/invite/{invite.token}/", &[Server], "Template of invite landing page links; `{invite.token}` is replaced by the token. An `http://` or `https://` URL."),
    var!("SNIKKET_SMTP_URL", "smtp://localhost:1025/;no-tls", &[Server], "Outgoing mail server: `smtp[s]://[user[:password]@]host[:port]/[;no-tls|;insecure]`.", secret),
    var!("PUID", "owner of /snikket", &[Server, Certs], "Numeric user id that owns files written to `/snikket`."),
    var!("PGID", "owner of /snikket", &[Server, Certs], "Numeric group id that owns files written to `/snikket`."),
    var!("SNIKKET_LETSENCRYPT_TOS_AGREE", "", &[], "Written by Snikket's setup script; accepted and ignored (using the stack means agreeing to the CA's terms)."),
    // Portal (spec 2.2).
    var!("SNIKKET_WEB_SECRET_KEY", "generated, kept in the data volume", &[Portal], "Key that signs portal session cookies and CSRF tokens; generated once when unset.", secret),
    var!("SNIKKET_WEB_AVATAR_CACHE_TTL", "1800", &[Portal], "Seconds avatar images may be cached by browsers (0 to 31536000)."),
    var!("SNIKKET_WEB_LANGUAGES", "en da de fr id it pl ru sv uk zh_Hans_CN", &[Portal], "Space-separated portal languages; the first is the fallback."),
    var!("SNIKKET_WEB_APPLE_STORE_URL", "https://apps.apple.com/us/app/snikket/id1545164189", &[Portal], "iOS app link on invite pages; empty shows \"coming soon\"."),
    var!("SNIKKET_WEB_MAX_AVATAR_SIZE", "1048576", &[Portal], "Largest avatar upload in bytes (1024 to 16777216)."),
    var!("SNIKKET_WEB_SHOW_METRICS", "true", &[Portal], "`false` hides the system figures in the admin panel."),
    var!("SNIKKET_TWEAK_PORTAL_INTERNAL_HTTP_INTERFACE", "127.0.0.1", &[Portal], "Address the portal listens on (an IP address)."),
    var!("SNIKKET_TWEAK_PORTAL_INTERNAL_HTTP_PORT", "5765", &[Portal, Proxy], "Port the portal listens on (1 to 65535)."),
    // Proxy (spec 2.3).
    var!("SNIKKET_TWEAK_HTTP_PORT", "80", &[Proxy], "Port of the plain HTTP listener: ACME challenges and redirects to HTTPS (1 to 65535)."),
    var!("SNIKKET_TWEAK_HTTPS_PORT", "443", &[Proxy, Server, Portal], "Port of the HTTPS listener; also used in redirects and generated links (1 to 65535)."),
    var!("SNIKKET_TWEAK_INTERNAL_HTTP_HOST", "localhost", &[Proxy], "Host where the server's internal HTTP port is reached."),
    var!("SNIKKET_TWEAK_PORTAL_INTERNAL_HTTP_HOST", "localhost", &[Proxy], "Host where the portal is reached."),
    var!("SNIKKET_TWEAK_HTTP_TLS_VERSIONS", "TLSv1.2 TLSv1.3", &[Proxy], "Space-separated TLS versions the HTTPS listener accepts: `TLSv1.2`, `TLSv1.3` (older versions are not supported)."),
    var!("SNIKKET_TWEAK_HTTP_TLS_CIPHERS", "Mozilla intermediate list", &[Proxy], "Colon-separated OpenSSL cipher names for TLS 1.2; names our TLS library does not implement are ignored, at least one must be known."),
    var!("SNIKKET_TWEAK_WEB_PROXY_PROTOS", "http https", &[Proxy], "Which listeners run once certificates exist: any of `http`, `https`, space separated."),
    var!("SNIKKET_TWEAK_WEB_PROXY_RELOAD_INTERVAL", "86400", &[Proxy], "Accepted for compatibility; certificates are picked up as soon as they change, so no periodic reload is needed."),
    var!("SNIKKET_TWEAK_TRUSTED_PROXIES", "", &[Proxy], "Space or comma separated addresses or CIDR ranges of reverse proxies in front of us whose `X-Forwarded-For` is believed."),
    // Certificate manager (spec 2.4).
    var!("SNIKKET_CERTBOT_OPTIONS", "", &[Certs], "Extra certbot options. Understood: `--staging`, `--test-cert`, `--key-type rsa|ecdsa`, `--rsa-key-size N`; others are ignored with a warning."),
    var!("SNIKKET_CERTBOT_KEY_OPTIONS", "--reuse-key", &[Certs], "`--reuse-key` keeps the private key across renewals, `--no-reuse-key` makes a new key each time."),
    var!("SNIKKET_CERTS_WAIT", "0", &[Certs], "`1` waits until `http://DOMAIN` answers before the first certificate request."),
    var!("REPORT_DSN", "", &[Certs], "Sentry-style DSN that certificate failures are reported to.", secret),
    var!("SNIKKET_TWEAK_ACME", "1", &[Certs], "`0` never contacts a CA: a long-lived self-signed certificate is kept instead (development, or certificates managed by hand)."),
    var!("SNIKKET_TWEAK_ACME_DIRECTORY_URL", "https://acme-v02.api.letsencrypt.org/directory", &[Certs], "ACME directory of the certificate authority. An `https://` URL."),
    var!("SNIKKET_TWEAK_ACME_CA_BUNDLE", "", &[Certs], "PEM file of extra root certificates trusted when talking to the ACME server (for private CAs and testing)."),
    var!("SNIKKET_TWEAK_ACME_CHALLENGE_DIR", "/var/www/.well-known/acme-challenge (certs), /var/www/html/.well-known/acme-challenge (proxy)", &[Certs, Proxy], "Directory shared by the certificate manager and the proxy for HTTP-01 challenge files."),
    // Server tweaks (spec 2.5).
    var!("SNIKKET_TWEAK_INTERNAL_HTTP_PORT", "5280", &[Server, Proxy], "Port of the server's internal HTTP service: uploads, WebSocket, BOSH, health (1 to 65535)."),
    var!("SNIKKET_TWEAK_INTERNAL_HTTP_INTERFACE", "127.0.0.1,::1", &[Server], "Addresses of the internal HTTP service, separated by commas or spaces."),
    var!("SNIKKET_TWEAK_TURNSERVER", "1", &[Server, Turn], "`0` disables the built-in TURN server (the container exits at once); TURN is still advertised if `SNIKKET_TWEAK_TURNSERVER_DOMAIN` is set."),
    var!("SNIKKET_TWEAK_TURNSERVER_DOMAIN", "SNIKKET_DOMAIN", &[Server], "Host advertised to clients for STUN/TURN."),
    var!("SNIKKET_TWEAK_TURNSERVER_PORT", "3478", &[Server, Turn], "STUN/TURN port, UDP and TCP (1 to 65535)."),
    var!("SNIKKET_TWEAK_TURNSERVER_TLS_PORT", "5349", &[Turn], "TURN-over-TLS port (1 to 65535, 0 disables)."),
    var!("SNIKKET_TWEAK_TURNSERVER_SECRET", "contents of /snikket/prosody/turn-auth-secret-v2", &[Server, Turn], "Shared secret for TURN credentials; only needed with an external TURN server.", secret),
    var!("SNIKKET_TWEAK_TURNSERVER_MIN_PORT", "49152", &[Turn], "Lowest UDP relay port: an integer with 1024 < port ≤ 65535 and not above the maximum. Each call needs up to 4 ports."),
    var!("SNIKKET_TWEAK_TURNSERVER_MAX_PORT", "65535", &[Turn], "Highest UDP relay port: an integer with 1024 < port ≤ 65535 and not below the minimum."),
    var!("SNIKKET_TWEAK_TURNSERVER_INTERNAL_IP", "", &[Turn], "This host's internal address when it is behind NAT (an IP address)."),
    var!("SNIKKET_TWEAK_TURNSERVER_ALLOWED_PEERS", "", &[Turn], "Space or comma separated addresses or CIDR ranges the relay may reach even though they are private, loopback or otherwise denied."),
    var!("SNIKKET_TWEAK_TURNSERVER_USER_QUOTA", "12", &[Turn], "Simultaneous relay allocations per user (1 to 10000)."),
    var!("SNIKKET_TWEAK_TURNSERVER_TOTAL_QUOTA", "0", &[Turn], "Simultaneous relay allocations in total (0 means as many as the port range allows)."),
    var!("SNIKKET_TWEAK_TURNSERVER_MAX_BPS", "1250000", &[Turn], "Relayed bytes per second per allocation (0 means unlimited)."),
    var!("SNIKKET_TWEAK_IPV6", "1", ALL, "`0` disables IPv6 listeners and connections."),
    var!("SNIKKET_TWEAK_PROMETHEUS", "0", &[Server], "`1` serves OpenMetrics at `/metrics` on the internal HTTP port (loopback clients only)."),
    var!("SNIKKET_TWEAK_DNSSEC", "0", &[Server], "Accepted for compatibility: DANE for federation is not implemented (the server warns at startup when it is `1`); peers are checked against certificate authorities."),
    var!("SNIKKET_TWEAK_STORAGE", "files", &[Server], "Accepted for compatibility (`files` or `sqlite`); this server always uses its SQL store, see `SNIKKET_TWEAK_DATABASE_URL`."),
    var!("SNIKKET_TWEAK_EXTRA_CONFIG", "", &[Server], "Prosody configuration includes; not applicable to this server and ignored with a warning when set."),
    var!("SNIKKET_TWEAK_SHARE_DOMAIN", "0", &[Server, Proxy], "`1` serves file sharing on `https://DOMAIN/upload/` instead of `share.DOMAIN`."),
    var!("SNIKKET_TWEAK_GENERAL_MUC", "hidden", &[Server], "What to do with a legacy `general@groups.DOMAIN` room: `hidden` or `destroyed`."),
    var!("SNIKKET_TWEAK_REQUIRE_SASL2", "0", &[Server], "`1` refuses clients that do not log in with SASL2 and a client id."),
    var!("SNIKKET_TWEAK_RESTRICTED_USERS_V2", "0", &[Server], "`1` restricts limited users to contacts they are subscribed to instead of to this server."),
    var!("SNIKKET_TWEAK_S2S_STATUS", "0", &[Server], "`1` records the status of server-to-server connections."),
    var!("SNIKKET_TWEAK_SHARE_PROXY", "0", &[Server], "`1` offers clients an HTTP CONNECT proxy for fetching shared files."),
    var!("SNIKKET_TWEAK_GC3", "0", &[Server], "`1` enables experimental group chat features."),
    var!("SNIKKET_TWEAK_PUSH2", "", &[], "Accepted for compatibility; has no effect (modern push is always on)."),
    var!("TWEAK_SNIKKET_BOOTSTRAP_INDEX", "", &[Server], "Replay index of the hosting bootstrap invite (a non-negative integer)."),
    var!("TWEAK_SNIKKET_BOOTSTRAP_SECRET", "", &[Server], "Enables `/invites_bootstrap?token=SECRET` (hosting providers only).", secret),
    var!("TWEAK_SNIKKET_BOOTSTRAP_TTL", "2419200", &[Server], "Lifetime in seconds of the bootstrap invite (60 to 31536000)."),
    // Our own additions.
    var!("SNIKKET_TWEAK_DATA_DIR", "/snikket", ALL, "Root of all persistent state (the `snikket_data` volume)."),
    var!("SNIKKET_TWEAK_DATABASE_URL", "sqlite in the data directory", &[Server], "`sqlite:///path/file.sqlite` or `postgres://user:password@host/db`. Unset: SQLite at `DATA_DIR/server/snikket.sqlite`.", secret),
    var!("SNIKKET_TWEAK_BIND_INTERFACES", "0.0.0.0 ::", &[Server, Proxy, Turn], "Addresses public listeners bind, space or comma separated (`::` is dropped when `SNIKKET_TWEAK_IPV6=0`)."),
    var!("SNIKKET_TWEAK_C2S_PORT", "5222", &[Server], "XMPP client port with STARTTLS (1 to 65535)."),
    var!("SNIKKET_TWEAK_C2S_DIRECT_TLS_PORT", "5223", &[Server], "XMPP client port with direct TLS (1 to 65535)."),
    var!("SNIKKET_TWEAK_S2S_PORT", "5269", &[Server], "XMPP server-to-server port (1 to 65535)."),
    var!("SNIKKET_TWEAK_S2S_ROUTES", "", &[Server], "Fixed addresses for remote domains instead of DNS: `domain=host:port` pairs separated by commas (private networks, tests)."),
    var!("SNIKKET_TWEAK_S2S_CAFILE", "", &[Server], "PEM file of extra certificate authorities trusted for remote servers (besides the built-in Mozilla roots)."),
    var!("SNIKKET_TWEAK_GRPC_INTERFACE", "127.0.0.1", ALL, "Address of the internal gRPC services; must be a loopback address."),
    var!("SNIKKET_TWEAK_SERVER_GRPC_PORT", "5290", &[Server, Portal], "Port of the server's admin gRPC API (1 to 65535)."),
    var!("SNIKKET_TWEAK_CERTS_GRPC_PORT", "5291", &[Certs, Portal], "Port of the certificate manager's status gRPC API (1 to 65535)."),
    var!("SNIKKET_TWEAK_TURN_GRPC_PORT", "5292", &[Turn, Portal], "Port of the TURN server's status gRPC API (1 to 65535)."),
];

/// Variables that Snikket's own entrypoints derive and export; accepted silently.
pub const DERIVED: &[&str] = &[
    "SNIKKET_DOMAIN_ASCII",
    "SNIKKET_WEB_DOMAIN",
    "SNIKKET_WEB_SITE_NAME",
    "SNIKKET_WEB_TOS_URI",
    "SNIKKET_WEB_PRIVACY_URI",
    "SNIKKET_WEB_ABUSE_EMAIL",
    "SNIKKET_WEB_SECURITY_EMAIL",
    "SNIKKET_WEB_PROSODY_ENDPOINT",
    "SNIKKET_WEB_PYENV",
    "SNIKKET_TWEAK_PROMETHEUS_ALLOWED",
];

/// Looks a variable up by name.
pub fn spec(name: &str) -> Option<&'static VarSpec> {
    VARIABLES.iter().find(|v| v.name == name)
}

/// The known variable closest to `name`, when it is close enough to be a plausible typo.
pub fn closest(name: &str) -> Option<&'static str> {
    let mut best: Option<(&'static str, usize)> = None;
    for v in VARIABLES {
        let d = strsim::levenshtein(name, v.name);
        if best.is_none_or(|(_, bd)| d < bd) {
            best = Some((v.name, d));
        }
    }
    // Allow roughly one edit per five characters, at least two.
    let limit = (name.len() / 5).max(2);
    best.filter(|(_, d)| *d <= limit).map(|(n, _)| n)
}

/// Renders the reference table that lives in `docs/config.md`.
pub fn markdown() -> String {
    let mut out = String::from(
        "# Configuration reference\n\n\
         Generated from `crates/config/src/vars.rs`; do not edit by hand \
         (`cargo test -p snikket-config` fails when this file is out of date, \
         `UPDATE_DOCS=1 cargo test -p snikket-config` rewrites it).\n\n\
         Every variable is read from `snikket.conf` (Docker `env_file` format: `KEY=VALUE` lines, `#` comments, \
         no shell expansion) and from the environment, which wins. Invalid values stop the service at startup \
         with a message naming the variable and what is allowed; all problems are listed at once.\n\n\
         | Variable | Default | Used by | Meaning |\n|---|---|---|---|\n",
    );
    for v in VARIABLES {
        let used: Vec<&str> = v.used_by.iter().map(|s| s.label()).collect();
        let default = if v.default.is_empty() {
            "unset".to_string()
        } else {
            format!("`{}`", v.default)
        };
        out.push_str(&format!(
            "| `{}` | {} | {} | {} |\n",
            v.name,
            default,
            if used.is_empty() {
                "none".to_string()
            } else {
                used.join(", ")
            },
            v.doc.replace('|', "\\|")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique() {
        let mut names: Vec<&str> = VARIABLES.iter().map(|v| v.name).collect();
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(before, names.len());
    }

    #[test]
    fn typo_gets_closest_name() {
        assert_eq!(closest("SNIKKET_DOMIAN"), Some("SNIKKET_DOMAIN"));
        assert_eq!(
            closest("SNIKKET_TWEAK_TURNSERVER_MINPORT"),
            Some("SNIKKET_TWEAK_TURNSERVER_MIN_PORT")
        );
        assert_eq!(closest("SNIKKET_SOMETHING_ELSE_ENTIRELY"), None);
    }
}
