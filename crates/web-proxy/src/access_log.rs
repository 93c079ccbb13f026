//! One access-log line per request on stdout, in the combined log format nginx uses
//! (`client - - [time] "request" status bytes "referer" "user-agent"`), through tracing target `access`.

use std::net::IpAddr;
use time::macros::format_description;

/// What is logged about one request.
pub struct Entry<'a> {
    /// The client (after trusted-proxy resolution).
    pub client: IpAddr,
    /// Method.
    pub method: &'a str,
    /// Request target as received.
    pub target: &'a str,
    /// `HTTP/1.1`, `HTTP/2.0`.
    pub version: http::Version,
    /// Response status.
    pub status: u16,
    /// Response body length, if known up front.
    pub bytes: Option<u64>,
    /// `Referer`.
    pub referer: Option<&'a str>,
    /// `User-Agent`.
    pub user_agent: Option<&'a str>,
    /// Normalized host.
    pub host: Option<&'a str>,
}

/// Escapes quotes, backslashes and control characters so a request cannot forge log lines.
fn clean(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\x22"),
            '\\' => out.push_str("\\x5C"),
            c if c.is_control() => out.push_str(&format!("\\x{:02X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out
}

/// The log line.
pub fn format(e: &Entry<'_>, now: time::OffsetDateTime) -> String {
    let ts = now
        .format(format_description!(
            "[day]/[month repr:short]/[year]:[hour]:[minute]:[second] +0000"
        ))
        .unwrap_or_default();
    format!(
        "{client} - - [{ts}] \"{method} {target} {version:?}\" {status} {bytes} \"{referer}\" \"{ua}\" host={host}",
        client = e.client,
        method = clean(e.method),
        target = clean(e.target),
        version = e.version,
        status = e.status,
        bytes = e.bytes.map(|b| b.to_string()).unwrap_or_else(|| "-".into()),
        referer = e.referer.map(clean).unwrap_or_else(|| "-".into()),
        ua = e.user_agent.map(clean).unwrap_or_else(|| "-".into()),
        host = e.host.map(clean).unwrap_or_else(|| "-".into()),
    )
}

/// Writes the line.
pub fn log(e: &Entry<'_>) {
    if !tracing::enabled!(target: "access", tracing::Level::INFO) {
        return;
    }
    let line = format(e, time::OffsetDateTime::now_utc());
    tracing::info!(target: "access", "{line}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_format_and_escaping() {
        let e = Entry {
            client: "192.0.2.1".parse().unwrap(),
            method: "GET",
            target: "/a\"b\n",
            version: http::Version::HTTP_11,
            status: 200,
            bytes: Some(12),
            referer: None,
            user_agent: Some("curl/8"),
            host: Some("chat.example.com"),
        };
        let t = time::macros::datetime!(2026-01-02 03:04:05 UTC);
        assert_eq!(
            format(&e, t),
            "192.0.2.1 - - [02/Jan/2026:03:04:05 +0000] \"GET /a\\x22b\\x0A HTTP/1.1\" 200 12 \"-\" \"curl/8\" host=chat.example.com"
        );
    }
}
