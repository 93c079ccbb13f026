//! Branded pages and assets embedded in the binary: the starting page (spec 6.5) and error pages (6.2).
//!
//! Nothing here takes request data, so no escaping is needed: pages are built from constants only.

use http::StatusCode;

const LAYOUT: &str = include_str!("../assets/layout.html");
const STARTING: &str = include_str!("../assets/starting.html");
const BOX_WAITING: &str = include_str!("../assets/box-waiting.html");
const BOX_PROBLEM: &str = include_str!("../assets/box-problem.html");
const ERROR: &str = include_str!("../assets/error.html");

/// A static file served by the proxy itself.
#[derive(Debug, PartialEq, Eq)]
pub struct Asset {
    /// URL path.
    pub path: &'static str,
    /// `Content-Type`.
    pub content_type: &'static str,
    /// The bytes.
    pub body: &'static [u8],
}

/// The proxy's own assets. They live under `/static/proxy/` so that they never shadow the portal's
/// `/static/` files.
pub static ASSETS: &[Asset] = &[
    Asset {
        path: "/static/proxy/snikket.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../assets/snikket.css"),
    },
    Asset {
        path: "/static/proxy/logo.svg",
        content_type: "image/svg+xml",
        body: include_bytes!("../assets/logo.svg"),
    },
];

/// The asset at `path`, if any.
pub fn asset(path: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.path == path)
}

fn layout(title: &str, head: &str, body: &str) -> String {
    LAYOUT
        .replace("{{head}}", head)
        .replace("{{title}}", title)
        .replace("{{body}}", body)
}

/// "Snikket is starting", refreshing every 10 s; the "Problem detected!" box while `has-errors` exists.
pub fn starting(has_errors: bool) -> String {
    let body = STARTING.replace(
        "{{box}}",
        if has_errors { BOX_PROBLEM } else { BOX_WAITING },
    );
    layout(
        "Snikket is starting",
        "<meta http-equiv=\"refresh\" content=\"10\">\n",
        &body,
    )
}

/// The branded page for an error status.
pub fn error(status: StatusCode) -> String {
    let code = format!(
        "{} {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("Error")
    );
    let (heading, message) = match status.as_u16() {
        404 => (
            "Oops! We couldn't find what you were looking for.",
            "The page you requested does not exist on this Snikket service.",
        ),
        502..=504 => (
            "Oops! A technical glitch.",
            "There was a problem connecting to the Snikket service of this site. If you just started this service, please wait a moment and reload the page. If the problem persists, contact the administrator of this service.",
        ),
        413 => (
            "Oops! That is too large.",
            "The request you sent is larger than this Snikket service accepts.",
        ),
        431 => (
            "Oops! That request is too large.",
            "The request headers are larger than this Snikket service accepts.",
        ),
        _ => (
            "Oops! Something went wrong.",
            "This Snikket service could not handle the request.",
        ),
    };
    let body = ERROR
        .replace("{{heading}}", heading)
        .replace("{{message}}", message)
        .replace("{{code}}", &code);
    layout(&code, "", &body)
}

/// The 404 for host names that are not this installation's.
pub fn site_not_found() -> String {
    let body = ERROR
        .replace("{{heading}}", "Oops! Site not found.")
        .replace(
            "{{message}}",
            "The address you requested does not seem to match the domain of your Snikket installation. Check the address, and that DNS points to this server.",
        )
        .replace("{{code}}", "404 Not Found");
    layout("Site not found", "", &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starting_page_variants() {
        let ok = starting(false);
        assert!(ok.contains("<title>Snikket is starting</title>"));
        assert!(ok.contains("content=\"10\""));
        assert!(ok.contains("more than a few minutes"));
        assert!(!ok.contains("Problem detected!"));
        let bad = starting(true);
        assert!(bad.contains("Problem detected!"));
        assert!(!bad.contains("more than a few minutes"));
        assert!(!bad.contains("{{"));
    }

    #[test]
    fn error_pages_are_branded_and_self_contained() {
        for s in [502u16, 503, 504, 404, 413] {
            let page = error(StatusCode::from_u16(s).unwrap());
            assert!(page.contains("Snikket"), "{s}");
            assert!(page.contains(&format!("<code>{s} ")), "{s}");
            assert!(!page.contains("{{"), "{s}");
            assert!(
                !page.contains("http://") && !page.contains("src=\"https"),
                "{s}"
            );
        }
        assert!(error(StatusCode::BAD_GATEWAY).contains("<code>502 Bad Gateway</code>"));
        assert!(site_not_found().contains("Site not found"));
        assert!(asset("/static/proxy/snikket.css").is_some());
        assert!(asset("/static/proxy/nope.css").is_none());
    }
}
