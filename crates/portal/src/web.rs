//! Page plumbing: templates, the base context, error pages, security headers and small helpers.

use crate::backend::{friendly, BackendError};
use crate::i18n::n_;
use crate::i18n::{I18n, Tr};
use crate::session::{self, Session, CSRF_COOKIE, SESSION_COOKIE};
use crate::AppState;
use axum::response::{Html, IntoResponse, Redirect, Response};
use http::{header, HeaderMap, HeaderValue, StatusCode};
use rand::RngCore;
use serde_json::{Map, Value};
use std::sync::Arc;

/// The embedded templates.
pub(crate) fn templates(i18n: &Arc<I18n>) -> minijinja::Environment<'static> {
    let mut env = minijinja::Environment::new();
    crate::i18n::install(&mut env, i18n);
    let files: [(&str, &str); 27] = [
        ("invite.html", include_str!("../templates/invite.html")),
        (
            "invite_register.html",
            include_str!("../templates/invite_register.html"),
        ),
        (
            "invite_success.html",
            include_str!("../templates/invite_success.html"),
        ),
        ("base.html", include_str!("../templates/base.html")),
        ("error.html", include_str!("../templates/error.html")),
        ("login.html", include_str!("../templates/login.html")),
        (
            "dashboard.html",
            include_str!("../templates/dashboard.html"),
        ),
        ("passwd.html", include_str!("../templates/passwd.html")),
        ("logout.html", include_str!("../templates/logout.html")),
        (
            "manage_data.html",
            include_str!("../templates/manage_data.html"),
        ),
        ("profile.html", include_str!("../templates/profile.html")),
        ("policies.html", include_str!("../templates/policies.html")),
        ("about.html", include_str!("../templates/about.html")),
        (
            "admin_home.html",
            include_str!("../templates/admin_home.html"),
        ),
        (
            "admin_invitations.html",
            include_str!("../templates/admin_invitations.html"),
        ),
        (
            "admin_invitation.html",
            include_str!("../templates/admin_invitation.html"),
        ),
        (
            "admin_base.html",
            include_str!("../templates/admin_base.html"),
        ),
        (
            "admin_users.html",
            include_str!("../templates/admin_users.html"),
        ),
        (
            "admin_user.html",
            include_str!("../templates/admin_user.html"),
        ),
        (
            "admin_user_delete.html",
            include_str!("../templates/admin_user_delete.html"),
        ),
        (
            "admin_user_debug.html",
            include_str!("../templates/admin_user_debug.html"),
        ),
        (
            "admin_reset.html",
            include_str!("../templates/admin_reset.html"),
        ),
        (
            "admin_circles.html",
            include_str!("../templates/admin_circles.html"),
        ),
        (
            "admin_circle.html",
            include_str!("../templates/admin_circle.html"),
        ),
        (
            "admin_circle_delete.html",
            include_str!("../templates/admin_circle_delete.html"),
        ),
        (
            "admin_circle_add_chat.html",
            include_str!("../templates/admin_circle_add_chat.html"),
        ),
        (
            "admin_system.html",
            include_str!("../templates/admin_system.html"),
        ),
    ];
    for (name, text) in files {
        if let Err(e) = env.add_template(name, text) {
            tracing::error!(template = name, error = %e, "template does not compile");
        }
    }
    env
}

/// The stylesheet.
pub(crate) const STYLE: &str = include_str!("../static/style.css");
/// The logo (our own drawing, `crates/server/assets/make-logo.py`) and the icons made from it:
/// file name, media type, bytes.
pub(crate) const IMAGES: [(&str, &str, &[u8]); 7] = [
    (
        "logo.svg",
        "image/svg+xml",
        include_bytes!("../static/img/logo.svg"),
    ),
    (
        "favicon-16x16.png",
        "image/png",
        include_bytes!("../static/img/favicon-16x16.png"),
    ),
    (
        "favicon-32x32.png",
        "image/png",
        include_bytes!("../static/img/favicon-32x32.png"),
    ),
    (
        "apple-touch-icon.png",
        "image/png",
        include_bytes!("../static/img/apple-touch-icon.png"),
    ),
    (
        "android-chrome-192x192.png",
        "image/png",
        include_bytes!("../static/img/android-chrome-192x192.png"),
    ),
    (
        "android-chrome-256x256.png",
        "image/png",
        include_bytes!("../static/img/android-chrome-256x256.png"),
    ),
    (
        "android-chrome-512x512.png",
        "image/png",
        include_bytes!("../static/img/android-chrome-512x512.png"),
    ),
];

/// The copy/share progressive-enhancement script (no framework, no inline code).
pub(crate) const COPY_JS: &str = include_str!("../static/copy.js");

/// Why a page could not be shown.
#[derive(Debug)]
pub(crate) enum Fail {
    /// No valid session: redirect to the login page.
    Login,
    /// Logged in but not allowed (403).
    Forbidden,
    /// Unknown resource (404).
    NotFound,
    /// The form's CSRF token is missing or wrong (400).
    BadCsrf,
    /// The server refused with this reason; shown as a 400 page.
    Refused(String),
    /// The server is unreachable (503 with an error id).
    Unavailable(String),
}

impl From<BackendError> for Fail {
    fn from(e: BackendError) -> Self {
        match e {
            BackendError::Unavailable { detail } => Fail::Unavailable(detail),
            BackendError::Refused { reason, .. } => match reason.as_str() {
                "session-invalid" => Fail::Login,
                "permission-denied" | "account-disabled" => Fail::Forbidden,
                "invite-not-found" | "user-not-found" | "not-found" => Fail::NotFound,
                _ => Fail::Refused(reason),
            },
        }
    }
}

fn error_id() -> String {
    let mut b = [0u8; 8];
    rand::rngs::OsRng.fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// What every page knows about the request.
pub(crate) struct Ctx {
    pub(crate) session: Option<Session>,
    pub(crate) csrf: String,
    new_csrf: bool,
    /// The request's language.
    pub(crate) tr: Tr,
}

impl AppState {
    pub(crate) fn settings(&self) -> &crate::Settings {
        &self.inner.settings
    }

    pub(crate) fn backend(&self) -> &crate::Backend {
        &self.inner.backend
    }

    /// When this portal process started, Unix seconds.
    pub(crate) fn started_at(&self) -> i64 {
        self.inner.started_at
    }

    pub(crate) fn throttle(&self) -> &crate::throttle::Throttle {
        &self.inner.throttle
    }

    /// The valid, unexpired session of the request, if any.
    pub(crate) fn session(&self, headers: &HeaderMap) -> Option<Session> {
        let raw = session::cookie(headers, SESSION_COOKIE)?;
        let s: Session = self.inner.signer.verify(SESSION_COOKIE, raw)?;
        (s.expires_at > now()).then_some(s)
    }

    /// The request's context; a new CSRF token is issued if the request has none.
    pub(crate) fn ctx(&self, headers: &HeaderMap) -> Ctx {
        let existing = session::cookie(headers, CSRF_COOKIE)
            .and_then(|c| self.inner.signer.verify::<String>(CSRF_COOKIE, c));
        let (csrf, new_csrf) = match existing {
            Some(t) => (t, false),
            None => (session::new_csrf_token(), true),
        };
        Ctx {
            session: self.session(headers),
            csrf,
            new_csrf,
            tr: self.tr(headers),
        }
    }

    /// The request's language, from its `Accept-Language`.
    pub(crate) fn tr(&self, headers: &HeaderMap) -> Tr {
        let accept = headers
            .get(header::ACCEPT_LANGUAGE)
            .and_then(|v| v.to_str().ok());
        self.inner.i18n.negotiate(accept)
    }

    /// Fails unless the posted `token` matches the request's CSRF cookie.
    pub(crate) fn check_csrf(&self, headers: &HeaderMap, token: &str) -> Result<(), Fail> {
        let cookie = session::cookie(headers, CSRF_COOKIE)
            .and_then(|c| self.inner.signer.verify::<String>(CSRF_COOKIE, c))
            .unwrap_or_default();
        if session::csrf_matches(&cookie, token) {
            Ok(())
        } else {
            tracing::info!("form posted without a valid csrf token");
            Err(Fail::BadCsrf)
        }
    }

    /// The session cookie for `s`.
    pub(crate) fn session_cookie(&self, s: &Session) -> String {
        let max_age = (s.expires_at - now()).clamp(0, session::SESSION_SECONDS);
        session::set_cookie(
            SESSION_COOKIE,
            &self.inner.signer.sign(SESSION_COOKIE, s),
            max_age,
        )
    }

    /// Renders `name` with the base context plus `page` (a JSON object).
    pub(crate) fn render(
        &self,
        ctx: &Ctx,
        status: StatusCode,
        name: &str,
        page: Value,
    ) -> Response {
        let mut map = match page {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        map.insert(
            "site_name".into(),
            self.inner.settings.site_name.clone().into(),
        );
        map.insert("domain".into(), self.inner.settings.domain.clone().into());
        map.insert("csrf".into(), ctx.csrf.clone().into());
        map.insert("lang".into(), ctx.tr.tag().into());
        map.insert("html_lang".into(), ctx.tr.bcp47().into());
        map.insert(
            "user".into(),
            match &ctx.session {
                Some(s) => serde_json::json!({"username": s.username, "admin": s.admin}),
                None => Value::Null,
            },
        );
        let html = self
            .inner
            .templates
            .get_template(name)
            .and_then(|t| t.render(&map));
        let mut resp = match html {
            Ok(h) => (status, Html(h)).into_response(),
            Err(e) => {
                let id = error_id();
                tracing::error!(error_id = %id, template = name, error = %e, "rendering failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                    format!("Internal error. Error id: {id}"),
                )
                    .into_response()
            }
        };
        if let Ok(v) = HeaderValue::from_str(ctx.tr.bcp47()) {
            resp.headers_mut().insert(header::CONTENT_LANGUAGE, v);
        }
        resp.headers_mut()
            .append(header::VARY, HeaderValue::from_static("Accept-Language"));
        if ctx.new_csrf {
            let value = session::set_cookie(
                CSRF_COOKIE,
                &self.inner.signer.sign(CSRF_COOKIE, &ctx.csrf),
                session::SESSION_SECONDS,
            );
            if let Ok(v) = HeaderValue::from_str(&value) {
                resp.headers_mut().append(header::SET_COOKIE, v);
            }
        }
        resp
    }

    fn error_page(
        &self,
        ctx: &Ctx,
        status: StatusCode,
        heading: &str,
        message: &str,
        id: Option<&str>,
    ) -> Response {
        self.render(
            ctx,
            status,
            "error.html",
            serde_json::json!({"heading": heading, "message": message, "error_id": id}),
        )
    }

    /// The response for a failure.
    pub(crate) fn fail(&self, headers: &HeaderMap, f: Fail) -> Response {
        let ctx = self.ctx(headers);
        match f {
            Fail::Login => {
                let mut r = Redirect::to("/login").into_response();
                if ctx.session.is_some() {
                    if let Ok(v) = HeaderValue::from_str(&session::set_cookie(SESSION_COOKIE, "", 0)) {
                        r.headers_mut().append(header::SET_COOKIE, v);
                    }
                }
                r
            }
            Fail::Forbidden => self.error_page(&ctx, StatusCode::FORBIDDEN, "Access denied", n_("This is not for you."), None),
            Fail::NotFound => self.error_page(
                &ctx,
                StatusCode::NOT_FOUND,
                n_("Not found"),
                n_("The page you are looking for does not exist, has expired or was already used."),
                None,
            ),
            Fail::BadCsrf => self.error_page(
                &ctx,
                StatusCode::BAD_REQUEST,
                n_("Form expired"),
                n_("The form was too old or was sent from another page. Please go back, reload it and try again."),
                None,
            ),
            Fail::Refused(reason) => self.error_page(&ctx, StatusCode::BAD_REQUEST, n_("Not possible"), friendly(&reason), None),
            Fail::Unavailable(detail) => {
                let id = error_id();
                tracing::error!(error_id = %id, detail = %detail, "server unreachable");
                self.error_page(
                    &ctx,
                    StatusCode::SERVICE_UNAVAILABLE,
                    n_("Internal error"),
                    n_("The web portal was not able to communicate with the backend. Please try again later and/or inform your Snikket service admin."),
                    Some(&id),
                )
            }
        }
    }

    /// `r` itself, or the page for its failure.
    pub(crate) fn done(&self, headers: &HeaderMap, r: Result<Response, Fail>) -> Response {
        r.unwrap_or_else(|f| self.fail(headers, f))
    }
}

/// Adds the security headers to every response.
pub(crate) async fn security_headers(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    resp
}

/// Now, Unix seconds.
pub(crate) fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// "in 6 days", "3 hours ago", relative to `now`, in the request's language.
pub(crate) fn relative(tr: &Tr, now: i64, ts: i64) -> String {
    let d = ts - now;
    let a = d.unsigned_abs();
    let future = d >= 0;
    if a < 60 {
        return if future {
            tr.gettext("in less than a minute").to_string()
        } else {
            tr.gettext("just now").to_string()
        };
    }
    match (a < 3600, a < 86400, future) {
        (true, _, true) => tr.ngettext("in %(num)s minute", "in %(num)s minutes", a / 60),
        (true, _, false) => tr.ngettext("%(num)s minute ago", "%(num)s minutes ago", a / 60),
        (_, true, true) => tr.ngettext("in %(num)s hour", "in %(num)s hours", a / 3600),
        (_, true, false) => tr.ngettext("%(num)s hour ago", "%(num)s hours ago", a / 3600),
        (_, _, true) => tr.ngettext("in %(num)s day", "in %(num)s days", a / 86400),
        (_, _, false) => tr.ngettext("%(num)s day ago", "%(num)s days ago", a / 86400),
    }
}

/// ISO 8601 form of a Unix timestamp, for `<time datetime>`.
pub(crate) fn iso(ts: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(ts)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// A Unix timestamp as `YYYY-MM-DD HH:MM UTC`; empty if out of range.
pub(crate) fn date(ts: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(ts)
        .map(|t| {
            format!(
                "{}-{:02}-{:02} {:02}:{:02} UTC",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute()
            )
        })
        .unwrap_or_default()
}

/// A length of time in words, to the minute: "3 days, 4 hours, 5 minutes".
pub(crate) fn duration(tr: &Tr, secs: i64) -> String {
    let secs = u64::try_from(secs).unwrap_or(0);
    let (days, hours, minutes) = (secs / 86400, secs % 86400 / 3600, secs % 3600 / 60);
    let mut words = Vec::new();
    if days > 0 {
        words.push(tr.ngettext("%(num)s day", "%(num)s days", days));
    }
    if hours > 0 {
        words.push(tr.ngettext("%(num)s hour", "%(num)s hours", hours));
    }
    if minutes > 0 {
        words.push(tr.ngettext("%(num)s minute", "%(num)s minutes", minutes));
    }
    if words.is_empty() {
        tr.gettext("less than a minute").to_string()
    } else {
        words.join(", ")
    }
}

/// Last activity at day granularity (spec 5.1): "Today", "Yesterday", "N days ago", "Never".
pub(crate) fn last_active(tr: &Tr, now: i64, ts: Option<i64>) -> String {
    match ts {
        None => tr.gettext("Never").to_string(),
        Some(ts) => match u64::try_from((now - ts).max(0) / 86400).unwrap_or(0) {
            0 => tr.gettext("Today").to_string(),
            1 => tr.gettext("Yesterday").to_string(),
            n => tr.ngettext("%(num)s day ago", "%(num)s days ago", n),
        },
    }
}

/// A byte count for people: "512 KiB", "13.4 MiB", "2.0 GiB".
pub(crate) fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if v < 10.0 {
        format!("{v:.1} {}", UNITS[unit])
    } else {
        format!("{v:.0} {}", UNITS[unit])
    }
}

/// `part` of `whole` as a percentage with one decimal ("12.5 %"); `None` when `whole` is 0.
pub(crate) fn percent(part: f64, whole: f64) -> Option<String> {
    (whole > 0.0).then(|| format!("{:.1} %", part / whole * 100.0))
}

/// Percent-encodes everything but unreserved characters (RFC 3986).
pub(crate) fn pct_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A server-side SVG QR code of `data`; empty if it does not fit.
pub(crate) fn qr_svg(data: &str) -> String {
    match qrcode::QrCode::new(data.as_bytes()) {
        Ok(code) => code
            .render::<qrcode::render::svg::Color<'_>>()
            .min_dimensions(200, 200)
            .quiet_zone(true)
            .build(),
        Err(_) => String::new(),
    }
}

/// Adds a `notice` or `error` (`(key, text)`) to a page's template data.
pub(crate) fn with_message(
    mut data: serde_json::Value,
    message: Option<(&str, &str)>,
) -> serde_json::Value {
    if let (Some((key, text)), Some(obj)) = (message, data.as_object_mut()) {
        obj.insert(key.to_string(), serde_json::Value::from(text));
    }
    data
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_counts_and_percentages() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(14_000_000), "13 MiB");
        assert_eq!(bytes(3 * 1024 * 1024 * 1024), "3.0 GiB");
        assert_eq!(percent(1.0, 8.0).as_deref(), Some("12.5 %"));
        assert_eq!(percent(1.0, 0.0), None);
    }

    fn en() -> Tr {
        crate::i18n::I18n::new(&["en".to_string()]).negotiate(None)
    }

    #[test]
    fn relative_times() {
        let en = en();
        assert_eq!(relative(&en, 0, 6 * 86400 + 10), "in 6 days");
        assert_eq!(relative(&en, 0, 3600), "in 1 hour");
        assert_eq!(relative(&en, 3 * 86400, 0), "3 days ago");
        assert_eq!(relative(&en, 100, 90), "just now");
    }

    #[test]
    fn dates_and_durations() {
        let en = en();
        assert_eq!(date(0), "1970-01-01 00:00 UTC");
        assert_eq!(date(86400 + 3661), "1970-01-02 01:01 UTC");
        assert_eq!(duration(&en, 59), "less than a minute");
        assert_eq!(
            duration(&en, 2 * 86400 + 3600 + 120),
            "2 days, 1 hour, 2 minutes"
        );
        assert_eq!(last_active(&en, 100, None), "Never");
        assert_eq!(last_active(&en, 86400 * 10, Some(86400 * 10 - 5)), "Today");
        assert_eq!(
            last_active(&en, 86400 * 10, Some(86400 * 9 - 5)),
            "Yesterday"
        );
        assert_eq!(last_active(&en, 86400 * 10, Some(86400 * 3)), "7 days ago");
    }

    #[test]
    fn qr_is_svg() {
        assert!(qr_svg("xmpp:example.org?register;preauth=abc").starts_with("<?xml"));
    }
}
