//! Table-driven tests: every default, every validation rule, typo help and the generated docs.

use super::*;

fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    m.insert("SNIKKET_DOMAIN".to_string(), "chat.example.com".to_string());
    m.insert(
        "SNIKKET_ADMIN_EMAIL".to_string(),
        "admin@example.com".to_string(),
    );
    for (k, v) in pairs {
        m.insert((*k).to_string(), (*v).to_string());
    }
    m
}

fn ok(pairs: &[(&str, &str)]) -> Config {
    match Config::from_vars(&vars(pairs)) {
        Ok(c) => c,
        Err(e) => panic!("expected valid config, got: {e}"),
    }
}

fn err(pairs: &[(&str, &str)]) -> Vec<Problem> {
    match Config::from_vars(&vars(pairs)) {
        Ok(_) => panic!("expected an error for {pairs:?}"),
        Err(e) => e.problems().to_vec(),
    }
}

#[test]
fn defaults_match_snikket() {
    let c = ok(&[]);
    assert_eq!(c.domain.ascii, "chat.example.com");
    assert_eq!(c.site_name, "chat.example.com");
    assert_eq!(c.log_level, LogLevel::Info);
    assert!(c.ipv6);
    assert_eq!(c.data_dir, PathBuf::from("/snikket"));
    assert_eq!(c.puid, None);
    assert_eq!(c.pgid, None);
    assert_eq!(c.bind_interfaces.len(), 2);
    assert_eq!(c.grpc_interface, IpAddr::from([127, 0, 0, 1]));
    let s = &c.server;
    assert_eq!(s.retention_days, 7);
    assert_eq!(s.upload_storage_bytes, None);
    assert_eq!(s.daily_upload_limit_bytes, None);
    assert_eq!(s.max_user_clients, 10);
    assert!(s.update_check);
    assert_eq!(s.abuse_email, None);
    assert_eq!(s.security_email, None);
    assert_eq!(s.tls_profile, TlsProfile::Modern);
    assert_eq!(s.proxy65_port, 5000);
    assert_eq!(
        s.invite_url,
        "https://chat.example.com/invite/{invite.token}/"
    );
    assert_eq!(s.smtp.host, "localhost");
    assert_eq!(s.smtp.port, 1025);
    assert!(!s.smtp.tls);
    assert_eq!(
        (s.c2s_port, s.c2s_direct_tls_port, s.s2s_port),
        (5222, 5223, 5269)
    );
    assert_eq!(s.internal_http_port, 5280);
    assert_eq!(
        s.internal_http_interfaces,
        vec![
            IpAddr::from([127, 0, 0, 1]),
            "::1".parse::<IpAddr>().unwrap()
        ]
    );
    assert_eq!(s.grpc_port, 5290);
    assert!(!s.prometheus && !s.dnssec && !s.share_on_main_domain);
    assert_eq!(s.general_muc, GeneralMuc::Hidden);
    assert!(
        !s.require_sasl2 && !s.restricted_users_v2 && !s.s2s_status && !s.share_proxy && !s.gc3
    );
    assert_eq!(
        s.database,
        Database::Sqlite(PathBuf::from("/snikket/server/snikket.sqlite"))
    );
    assert!(s.bootstrap.is_none());
    let t = &c.turn;
    assert!(t.enabled);
    assert_eq!(t.domain, "chat.example.com");
    assert!(!t.external_domain);
    assert_eq!((t.port, t.tls_port), (3478, Some(5349)));
    assert_eq!(t.secret, None);
    assert_eq!((t.min_port, t.max_port), (49152, 65535));
    assert_eq!(t.internal_ip, None);
    assert!(t.allowed_peers.is_empty());
    assert_eq!((t.user_quota, t.total_quota, t.max_bps), (12, 0, 1_250_000));
    assert_eq!(t.grpc_port, 5292);
    assert_eq!(t.calls_supported(), 4096);
    let p = &c.proxy;
    assert_eq!((p.http_port, p.https_port), (80, 443));
    assert_eq!(p.internal_http_host, "localhost");
    assert_eq!(p.portal_host, "localhost");
    assert!(p.tls12 && p.tls13);
    assert_eq!(p.tls_ciphers.len(), 9);
    assert!(p.serve_http && p.serve_https);
    assert!(p.trusted_proxies.is_empty());
    assert_eq!(
        p.acme_challenge_dir,
        PathBuf::from("/var/www/html/.well-known/acme-challenge")
    );
    let k = &c.certs;
    assert!(k.acme);
    assert_eq!(
        k.directory_url,
        "https://acme-v02.api.letsencrypt.org/directory"
    );
    assert_eq!(k.ca_bundle, None);
    assert!(k.reuse_key);
    assert!(k.certbot_options.is_empty());
    assert!(!k.wait_for_http);
    assert_eq!(k.report_dsn, None);
    assert_eq!(
        k.acme_challenge_dir,
        PathBuf::from("/var/www/.well-known/acme-challenge")
    );
    assert_eq!(k.grpc_port, 5291);
    let w = &c.portal;
    assert_eq!(w.interface, IpAddr::from([127, 0, 0, 1]));
    assert_eq!(w.port, 5765);
    assert_eq!(w.secret_key, None);
    assert_eq!(w.avatar_cache_ttl, 1800);
    assert_eq!(w.languages.first().map(String::as_str), Some("en"));
    assert_eq!(w.languages.len(), 11);
    assert_eq!(
        w.apple_store_url.as_deref(),
        Some("https://apps.apple.com/us/app/snikket/id1545164189")
    );
    assert_eq!(w.max_avatar_size, 1_048_576);
    assert!(w.show_metrics);
    assert_eq!(
        (w.tos_uri.as_deref(), w.privacy_uri.as_deref()),
        (None, None)
    );
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    assert_eq!(
        c.cert_live_dir(),
        PathBuf::from("/snikket/letsencrypt/live/chat.example.com")
    );
    assert_eq!(
        c.turn_secret_path(),
        PathBuf::from("/snikket/prosody/turn-auth-secret-v2")
    );
}

#[test]
fn every_variable_is_read_and_documented() {
    // `finish` debug-asserts that every documented variable was read; reaching here proves it.
    let c = ok(&[]);
    assert_eq!(c.domain.unicode, "chat.example.com");
    for v in VARIABLES {
        assert!(!v.doc.is_empty(), "{} has no documentation", v.name);
    }
}

#[test]
fn required_variables_use_snikket_wording() {
    let e = Config::from_vars(&BTreeMap::new()).unwrap_err();
    let text = e.to_string();
    assert!(text.contains("Please provide SNIKKET_DOMAIN"), "{text}");
    assert!(
        text.contains("Please provide SNIKKET_ADMIN_EMAIL"),
        "{text}"
    );
    let mut m = BTreeMap::new();
    m.insert("SNIKKET_DOMAIN".to_string(), "  ".to_string());
    m.insert("SNIKKET_ADMIN_EMAIL".to_string(), "a@b.example".to_string());
    assert_eq!(
        Config::from_vars(&m).unwrap_err().to_string(),
        "Please provide SNIKKET_DOMAIN"
    );
}

#[test]
fn all_problems_are_reported_at_once() {
    let problems = err(&[
        ("SNIKKET_RETENTION_DAYS", "seven"),
        ("SNIKKET_TWEAK_TURNSERVER_MIN_PORT", "80"),
        ("SNIKKET_TLS_PROFILE", "ultra"),
    ]);
    let names: Vec<&str> = problems.iter().map(|p| p.var.as_str()).collect();
    assert_eq!(
        names,
        vec![
            "SNIKKET_RETENTION_DAYS",
            "SNIKKET_TLS_PROFILE",
            "SNIKKET_TWEAK_TURNSERVER_MIN_PORT"
        ]
    );
    let text = ConfigError::Invalid(problems).to_string();
    assert!(
        text.contains(
            "SNIKKET_TWEAK_TURNSERVER_MIN_PORT=\"80\": must be an integer with 1024 < port ≤ 65535"
        ),
        "{text}"
    );
    assert!(
        text.contains("SNIKKET_RETENTION_DAYS=\"seven\": must be an integer from 1 to 36500"),
        "{text}"
    );
}

/// (variable, bad value, fragment of the message).
const INVALID: &[(&str, &str, &str)] = &[
    ("SNIKKET_DOMAIN", "https://chat.example.com", "bare domain"),
    ("SNIKKET_DOMAIN", "chat.example.com:5222", "bare domain"),
    ("SNIKKET_DOMAIN", "192.0.2.1", "not an IP address"),
    ("SNIKKET_DOMAIN", "bad_label.example", "valid domain"),
    ("SNIKKET_DOMAIN", "-x.example", "valid domain"),
    ("SNIKKET_ADMIN_EMAIL", "not-an-email", "e-mail address"),
    ("SNIKKET_RETENTION_DAYS", "0", "from 1 to 36500"),
    ("SNIKKET_RETENTION_DAYS", "-3", "from 1 to 36500"),
    ("SNIKKET_UPLOAD_STORAGE_GB", "lots", "GiB greater than 0"),
    ("SNIKKET_UPLOAD_STORAGE_GB", "0", "GiB greater than 0"),
    (
        "SNIKKET_DAILY_UPLOAD_LIMIT_PER_USER_GB",
        "-1",
        "GiB greater than 0",
    ),
    ("SNIKKET_MAX_USER_CLIENTS", "0", "from 1 to 1000"),
    (
        "SNIKKET_LOGLEVEL",
        "verbose",
        "one of: error, warn, info, debug, trace",
    ),
    ("SNIKKET_UPDATE_CHECK", "maybe", "must be 1 or 0"),
    ("SNIKKET_ABUSE_EMAIL", "abuse", "e-mail address"),
    ("SNIKKET_SECURITY_EMAIL", "sec@", "e-mail address"),
    (
        "SNIKKET_TOS_URI",
        "ftp://x.example/tos",
        "http:// or https:// URL",
    ),
    (
        "SNIKKET_PRIVACY_URI",
        "example.com/privacy",
        "http:// or https:// URL",
    ),
    (
        "SNIKKET_TLS_PROFILE",
        "strict",
        "one of: modern, intermediate, old, legacy",
    ),
    ("SNIKKET_PROXY65_PORT", "70000", "from 1 to 65535"),
    (
        "SNIKKET_INVITE_URL",
        "invite/{invite.token}",
        "http:// or https:// URL",
    ),
    ("SNIKKET_SMTP_URL", "mail.example.com", "smtp[s]://"),
    ("SNIKKET_SMTP_URL", "smtp://host/;bogus", "smtp[s]://"),
    ("PUID", "abc", "integer"),
    ("PGID", "-1", "integer"),
    ("SNIKKET_WEB_SECRET_KEY", "short", "at least 16"),
    (
        "SNIKKET_WEB_AVATAR_CACHE_TTL",
        "forever",
        "from 0 to 31536000",
    ),
    (
        "SNIKKET_WEB_APPLE_STORE_URL",
        "itunes",
        "http:// or https:// URL",
    ),
    ("SNIKKET_WEB_MAX_AVATAR_SIZE", "10", "from 1024 to 16777216"),
    ("SNIKKET_WEB_SHOW_METRICS", "sometimes", "must be 1 or 0"),
    (
        "SNIKKET_TWEAK_PORTAL_INTERNAL_HTTP_INTERFACE",
        "localhost",
        "IPv4 or IPv6 address",
    ),
    (
        "SNIKKET_TWEAK_PORTAL_INTERNAL_HTTP_PORT",
        "0",
        "from 1 to 65535",
    ),
    ("SNIKKET_TWEAK_HTTP_PORT", "http", "from 1 to 65535"),
    ("SNIKKET_TWEAK_HTTPS_PORT", "99999", "from 1 to 65535"),
    (
        "SNIKKET_TWEAK_HTTP_TLS_VERSIONS",
        "TLSv2",
        "TLSv1.2 and/or TLSv1.3",
    ),
    (
        "SNIKKET_TWEAK_HTTP_TLS_VERSIONS",
        "TLSv1.1",
        "at least one of",
    ),
    (
        "SNIKKET_TWEAK_HTTP_TLS_CIPHERS",
        "RC4-MD5",
        "at least one of",
    ),
    (
        "SNIKKET_TWEAK_WEB_PROXY_PROTOS",
        "http gopher",
        "http and/or https",
    ),
    ("SNIKKET_TWEAK_TRUSTED_PROXIES", "10.0.0.0/33", "CIDR"),
    (
        "SNIKKET_CERTBOT_KEY_OPTIONS",
        "--keep",
        "one of: --reuse-key, --no-reuse-key",
    ),
    ("SNIKKET_CERTS_WAIT", "2", "must be 1 or 0"),
    ("SNIKKET_TWEAK_ACME", "perhaps", "must be 1 or 0"),
    (
        "SNIKKET_TWEAK_ACME_DIRECTORY_URL",
        "http://acme.example/dir",
        "https:// URL",
    ),
    ("SNIKKET_TWEAK_INTERNAL_HTTP_PORT", "0", "from 1 to 65535"),
    (
        "SNIKKET_TWEAK_INTERNAL_HTTP_INTERFACE",
        "127.0.0.1,nowhere",
        "not one",
    ),
    ("SNIKKET_TWEAK_TURNSERVER", "off-ish", "must be 1 or 0"),
    (
        "SNIKKET_TWEAK_TURNSERVER_DOMAIN",
        "turn.example.com:3478",
        "bare domain",
    ),
    ("SNIKKET_TWEAK_TURNSERVER_PORT", "0", "from 1 to 65535"),
    (
        "SNIKKET_TWEAK_TURNSERVER_TLS_PORT",
        "65536",
        "from 0 to 65535",
    ),
    (
        "SNIKKET_TWEAK_TURNSERVER_MIN_PORT",
        "1024",
        "1024 < port ≤ 65535",
    ),
    (
        "SNIKKET_TWEAK_TURNSERVER_MIN_PORT",
        "x",
        "1024 < port ≤ 65535",
    ),
    (
        "SNIKKET_TWEAK_TURNSERVER_MAX_PORT",
        "65536",
        "1024 < port ≤ 65535",
    ),
    (
        "SNIKKET_TWEAK_TURNSERVER_INTERNAL_IP",
        "10.0.0",
        "IPv4 or IPv6 address",
    ),
    (
        "SNIKKET_TWEAK_TURNSERVER_ALLOWED_PEERS",
        "10.0.0.0/8 nope",
        "CIDR",
    ),
    (
        "SNIKKET_TWEAK_TURNSERVER_USER_QUOTA",
        "0",
        "from 1 to 10000",
    ),
    (
        "SNIKKET_TWEAK_TURNSERVER_TOTAL_QUOTA",
        "-1",
        "from 0 to 1000000",
    ),
    ("SNIKKET_TWEAK_TURNSERVER_MAX_BPS", "fast", "integer"),
    ("SNIKKET_TWEAK_IPV6", "2", "must be 1 or 0"),
    ("SNIKKET_TWEAK_PROMETHEUS", "yes please", "must be 1 or 0"),
    ("SNIKKET_TWEAK_DNSSEC", "x", "must be 1 or 0"),
    ("SNIKKET_TWEAK_STORAGE", "mysql", "one of: files, sqlite"),
    ("SNIKKET_TWEAK_SHARE_DOMAIN", "x", "must be 1 or 0"),
    (
        "SNIKKET_TWEAK_GENERAL_MUC",
        "public",
        "one of: hidden, destroyed",
    ),
    ("SNIKKET_TWEAK_REQUIRE_SASL2", "x", "must be 1 or 0"),
    ("SNIKKET_TWEAK_RESTRICTED_USERS_V2", "x", "must be 1 or 0"),
    ("SNIKKET_TWEAK_S2S_STATUS", "x", "must be 1 or 0"),
    ("SNIKKET_TWEAK_SHARE_PROXY", "x", "must be 1 or 0"),
    ("SNIKKET_TWEAK_GC3", "x", "must be 1 or 0"),
    ("TWEAK_SNIKKET_BOOTSTRAP_INDEX", "first", "integer"),
    ("TWEAK_SNIKKET_BOOTSTRAP_TTL", "10", "from 60 to 31536000"),
    ("SNIKKET_TWEAK_DATA_DIR", "relative/dir", "absolute path"),
    ("SNIKKET_TWEAK_DATABASE_URL", "mysql://x", "sqlite:///"),
    ("SNIKKET_TWEAK_BIND_INTERFACES", "0.0.0.0 eth0", "not one"),
    ("SNIKKET_TWEAK_C2S_PORT", "0", "from 1 to 65535"),
    ("SNIKKET_TWEAK_C2S_DIRECT_TLS_PORT", "0", "from 1 to 65535"),
    ("SNIKKET_TWEAK_S2S_PORT", "0", "from 1 to 65535"),
    (
        "SNIKKET_TWEAK_S2S_ROUTES",
        "b.test=127.0.0.1",
        "domain=host:port",
    ),
    ("SNIKKET_TWEAK_S2S_ROUTES", "b.test=h:0", "domain=host:port"),
    ("SNIKKET_TWEAK_GRPC_INTERFACE", "0.0.0.0", "loopback"),
    ("SNIKKET_TWEAK_SERVER_GRPC_PORT", "0", "from 1 to 65535"),
    ("SNIKKET_TWEAK_CERTS_GRPC_PORT", "0", "from 1 to 65535"),
    ("SNIKKET_TWEAK_TURN_GRPC_PORT", "0", "from 1 to 65535"),
];

#[test]
fn every_validation_rule_names_variable_and_allowed_form() {
    for (name, value, fragment) in INVALID {
        let problems = err(&[(name, value)]);
        let p = problems
            .iter()
            .find(|p| p.var == *name)
            .unwrap_or_else(|| panic!("{name}={value:?} produced {problems:?}"));
        assert!(
            p.message.contains(fragment),
            "{name}={value:?}: {:?}",
            p.message
        );
        let secret = spec(name).is_some_and(|s| s.secret);
        if secret {
            assert_eq!(p.value, None, "secret {name} must not be echoed");
        }
    }
}

#[test]
fn relay_port_order_is_checked_and_low_ports_warned() {
    let problems = err(&[
        ("SNIKKET_TWEAK_TURNSERVER_MIN_PORT", "60000"),
        ("SNIKKET_TWEAK_TURNSERVER_MAX_PORT", "50000"),
    ]);
    assert_eq!(problems.len(), 1);
    assert!(problems[0]
        .message
        .contains("must not be greater than SNIKKET_TWEAK_TURNSERVER_MAX_PORT (50000)"));
    let c = ok(&[
        ("SNIKKET_TWEAK_TURNSERVER_MIN_PORT", "20000"),
        ("SNIKKET_TWEAK_TURNSERVER_MAX_PORT", "20099"),
    ]);
    assert_eq!(c.turn.calls_supported(), 25);
    assert!(
        c.warnings.iter().any(|w| w.contains("below 40000")),
        "{:?}",
        c.warnings
    );
}

#[test]
fn valid_values_are_typed() {
    let c = ok(&[
        ("SNIKKET_DOMAIN", "Bücher.Example"),
        ("SNIKKET_SITE_NAME", "Family chat"),
        ("SNIKKET_RETENTION_DAYS", "30"),
        ("SNIKKET_UPLOAD_STORAGE_GB", "0.5"),
        ("SNIKKET_DAILY_UPLOAD_LIMIT_PER_USER_GB", "2"),
        ("SNIKKET_LOGLEVEL", "DEBUG"),
        ("SNIKKET_UPDATE_CHECK", "0"),
        ("SNIKKET_TLS_PROFILE", "legacy"),
        (
            "SNIKKET_SMTP_URL",
            "smtps://bob:s3cret@mail.example.com/;insecure",
        ),
        ("SNIKKET_TWEAK_TURNSERVER", "0"),
        ("SNIKKET_TWEAK_TURNSERVER_DOMAIN", "turn.example.net"),
        ("SNIKKET_TWEAK_TURNSERVER_TLS_PORT", "0"),
        (
            "SNIKKET_TWEAK_TURNSERVER_ALLOWED_PEERS",
            "10.1.0.0/16, 192.0.2.7",
        ),
        ("SNIKKET_TWEAK_IPV6", "0"),
        ("SNIKKET_TWEAK_HTTP_TLS_VERSIONS", "TLSv1.3"),
        ("SNIKKET_TWEAK_WEB_PROXY_PROTOS", "https"),
        ("SNIKKET_CERTBOT_KEY_OPTIONS", "--no-reuse-key"),
        ("SNIKKET_CERTBOT_OPTIONS", "--staging --key-type rsa"),
        ("SNIKKET_TWEAK_DATABASE_URL", "postgres://u:p@127.0.0.1/db"),
        ("TWEAK_SNIKKET_BOOTSTRAP_SECRET", "abc"),
        ("TWEAK_SNIKKET_BOOTSTRAP_INDEX", "3"),
        ("SNIKKET_WEB_APPLE_STORE_URL", ""),
        ("SNIKKET_TWEAK_GENERAL_MUC", "destroyed"),
    ]);
    assert_eq!(c.domain.ascii, "xn--bcher-kva.example");
    assert_eq!(c.domain.unicode, "bücher.example");
    assert_eq!(c.site_name, "Family chat");
    assert_eq!(c.server.retention_days, 30);
    assert_eq!(c.server.upload_storage_bytes, Some(536_870_912));
    assert_eq!(c.server.daily_upload_limit_bytes, Some(2_147_483_648));
    assert_eq!(c.log_level, LogLevel::Debug);
    assert!(!c.server.update_check);
    assert_eq!(c.server.tls_profile, TlsProfile::Old);
    let smtp = &c.server.smtp;
    assert_eq!(
        (smtp.host.as_str(), smtp.port, smtp.implicit_tls),
        ("mail.example.com", 465, true)
    );
    assert_eq!(
        (smtp.user.as_deref(), smtp.password.as_deref()),
        (Some("bob"), Some("s3cret"))
    );
    assert!(!smtp.verify_certificate);
    assert!(!format!("{smtp:?}").contains("s3cret"));
    assert!(!c.turn.enabled);
    assert_eq!(c.turn.domain, "turn.example.net");
    assert!(c.turn.external_domain);
    assert_eq!(c.turn.tls_port, None);
    assert_eq!(c.turn.allowed_peers.len(), 2);
    assert!(!c.ipv6);
    assert!(c.bind_interfaces.iter().all(IpAddr::is_ipv4));
    assert!(c
        .server
        .internal_http_interfaces
        .iter()
        .all(IpAddr::is_ipv4));
    assert!(!c.proxy.tls12 && c.proxy.tls13);
    assert!(!c.proxy.serve_http && c.proxy.serve_https);
    assert!(!c.certs.reuse_key);
    assert_eq!(
        c.certs.certbot_options,
        vec!["--staging", "--key-type", "rsa"]
    );
    assert!(matches!(c.server.database, Database::Postgres(_)));
    assert!(!format!("{:?}", c.server.database).contains("u:p"));
    let b = c.server.bootstrap.as_ref().unwrap();
    assert_eq!((b.index, b.ttl_secs), (Some(3), 2_419_200));
    assert!(!format!("{b:?}").contains("abc"));
    assert_eq!(c.portal.apple_store_url, None);
    assert_eq!(c.server.general_muc, GeneralMuc::Destroyed);
    assert_eq!(
        c.invite_landing_url("AbC-_1"),
        "https://xn--bcher-kva.example/invite/AbC-_1/"
    );
}

#[test]
fn invite_url_follows_https_port_and_template() {
    let c = ok(&[("SNIKKET_TWEAK_HTTPS_PORT", "8443")]);
    assert_eq!(
        c.invite_landing_url("t"),
        "https://chat.example.com:8443/invite/t/"
    );
    let c = ok(&[(
        "SNIKKET_INVITE_URL",
        "https://join.example.org/{invite.token}",
    )]);
    assert_eq!(
        c.invite_landing_url("a+b"),
        "https://join.example.org/a%2Bb"
    );
}

#[test]
fn unknown_variables_get_suggestions() {
    let c = ok(&[
        ("SNIKKET_RETENTON_DAYS", "3"),
        ("SNIKKET_FAVOURITE_COLOUR", "blue"),
        ("HOME", "/root"),
    ]);
    assert!(
        c.warnings
            .iter()
            .any(|w| w
                == "unknown variable SNIKKET_RETENTON_DAYS; did you mean SNIKKET_RETENTION_DAYS?"),
        "{:?}",
        c.warnings
    );
    assert!(c
        .warnings
        .iter()
        .any(|w| w == "unknown variable SNIKKET_FAVOURITE_COLOUR is ignored"));
    assert_eq!(c.warnings.len(), 2);
}

#[test]
fn file_then_environment_wins_and_bad_line_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("snikket.conf");
    std::fs::write(
        &path,
        "SNIKKET_DOMAIN=file.example.com\nSNIKKET_ADMIN_EMAIL=a@file.example.com\nSNIKKET_RETENTION_DAYS=3\n",
    )
    .unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let mut merged: BTreeMap<String, String> = parse_env_file(&text)
        .unwrap()
        .into_iter()
        .map(|a| (a.key, a.value))
        .collect();
    merged.insert("SNIKKET_RETENTION_DAYS".into(), "9".into());
    let c = Config::from_vars(&merged).unwrap();
    assert_eq!(c.domain.ascii, "file.example.com");
    assert_eq!(c.server.retention_days, 9);

    std::fs::write(&path, "SNIKKET_DOMAIN=x.example\nnot a line\n").unwrap();
    let e = Config::load(Some(&path)).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.ends_with("snikket.conf line 2: expected KEY=VALUE"),
        "{msg}"
    );
    let e = Config::load(Some(&dir.path().join("missing.conf"))).unwrap_err();
    assert!(e.to_string().starts_with("cannot read"), "{e}");
}

#[test]
fn docs_table_is_current() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/config.md");
    let want = markdown();
    if std::env::var_os("UPDATE_DOCS").is_some() {
        std::fs::write(&path, &want).unwrap();
    }
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        have == want,
        "docs/config.md is out of date; run `UPDATE_DOCS=1 cargo test -p snikket-config`"
    );
}

#[test]
fn s2s_routes_are_domain_host_port_pairs() {
    let c = ok(&[(
        "SNIKKET_TWEAK_S2S_ROUTES",
        "B.test=127.0.0.1:15269, groups.b.test=[::1]:5269",
    )]);
    assert_eq!(
        c.server.s2s_routes,
        vec![
            ("b.test".to_string(), "127.0.0.1:15269".to_string()),
            ("groups.b.test".to_string(), "[::1]:5269".to_string()),
        ]
    );
}
