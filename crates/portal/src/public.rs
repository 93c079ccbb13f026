//! Public informational routes (spec 5.3): terms and privacy redirects, the policies page,
//! `security.txt` (5.4.8), the about page, the web manifest and the `/-` redirects.

use crate::AppState;
use axum::extract::State;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use http::{header, HeaderMap, StatusCode};
use serde_json::json;

/// The portal's version, shown on the about page.
const VERSION: &str = env!("CARGO_PKG_VERSION");

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/terms", get(terms))
        .route("/privacy", get(privacy))
        .route("/policies/", get(policies))
        .route("/.well-known/security.txt", get(security_txt))
        .route("/meta/about.html", get(about))
        .route("/site.webmanifest", get(webmanifest))
        .route("/-", get(to_index))
        .route("/invite/-", get(to_index))
}

/// 303 to `uri`, or 404 with an empty body when it is not configured.
fn redirect_or_404(uri: Option<&str>) -> Response {
    match uri {
        Some(u) => Redirect::to(u).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn terms(State(st): State<AppState>) -> Response {
    redirect_or_404(st.settings().tos_uri.as_deref())
}

async fn privacy(State(st): State<AppState>) -> Response {
    redirect_or_404(st.settings().privacy_uri.as_deref())
}

async fn to_index() -> Response {
    Redirect::to("/").into_response()
}

async fn policies(State(st): State<AppState>, headers: HeaderMap) -> Response {
    let ctx = st.ctx(&headers);
    let s = st.settings();
    st.render(
        &ctx,
        StatusCode::OK,
        "policies.html",
        json!({
            "tos_uri": s.tos_uri,
            "privacy_uri": s.privacy_uri,
            "abuse_email": s.abuse_email,
        }),
    )
}

/// The `security.txt` body (spec 5.4.8).
fn security_txt_body(domain: &str, security_email: Option<&str>) -> String {
    let mut out = format!(
        "# This is the security.txt of {domain}, a Snikket service.\n\
         # Snikket is the software running this service: https://snikket.org/\n"
    );
    match security_email {
        Some(mail) => out.push_str(&format!("Contact: mailto:{mail}\n")),
        None => out.push_str(&format!("Contact: https://{domain}/policies/\n")),
    }
    out.push_str("Contact: https://snikket.org/security/\n");
    out
}

async fn security_txt(State(st): State<AppState>) -> Response {
    let s = st.settings();
    (
        [(header::CONTENT_TYPE, "text/plain;charset=UTF-8")],
        security_txt_body(&s.domain, s.security_email.as_deref()),
    )
        .into_response()
}

async fn about(State(st): State<AppState>, headers: HeaderMap) -> Response {
    let ctx = st.ctx(&headers);
    let server_version = match &ctx.session {
        Some(s) if s.admin => match st.backend().server_info(&s.token).await {
            Ok(info) => Some(info.version),
            Err(e) => {
                tracing::info!(error = %e, "about page: no server version");
                None
            }
        },
        _ => None,
    };
    st.render(
        &ctx,
        StatusCode::OK,
        "about.html",
        json!({"portal_version": VERSION, "server_version": server_version}),
    )
}

async fn webmanifest() -> Response {
    let icons: Vec<_> = [192, 256, 512]
        .iter()
        .map(|n| {
            json!({
                "src": format!("/static/img/android-chrome-{n}x{n}.png"),
                "sizes": format!("{n}x{n}"),
                "type": "image/png",
            })
        })
        .collect();
    let manifest = json!({
        "name": "Snikket",
        "short_name": "Snikket",
        "icons": icons,
        "theme_color": "#fbfdff",
        "background_color": "#fbfdff",
        "display": "standalone",
    });
    (
        [(header::CONTENT_TYPE, "application/manifest+json")],
        manifest.to_string(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::security_txt_body;

    #[test]
    fn security_txt_contacts() {
        let with = security_txt_body("example.org", Some("sec@example.org"));
        assert!(with.contains("Contact: mailto:sec@example.org\n"));
        assert!(!with.contains("https://example.org/policies/"));
        assert!(with.ends_with("Contact: https://snikket.org/security/\n"));
        let without = security_txt_body("example.org", None);
        assert!(without.contains("Contact: https://example.org/policies/\n"));
        assert!(!without.contains("mailto:"));
    }
}
