//! Routes and their handlers (spec 5.3): public, user and admin pages.

use crate::i18n::n_;
use crate::session::{self, Session, SESSION_COOKIE};
use crate::web::{self, now, Fail};
use crate::AppState;
use axum::extract::{ConnectInfo, Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use http::{header, HeaderMap, HeaderValue, StatusCode};
use serde::Deserialize;
use serde_json::json;
use snikket_rpc::snikket::admin::v1 as api;
use std::net::{IpAddr, SocketAddr};

/// Lifetimes offered for new invitations (spec 5.5.4), default one week.
const LIFETIMES: [(&str, &str); 5] = [
    ("3600", n_("One hour")),
    ("43200", n_("Twelve hours")),
    ("86400", n_("One day")),
    ("604800", n_("One week")),
    ("2419200", n_("Four weeks")),
];

pub(crate) fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/_health", get(health))
        .route("/static/style.css", get(style))
        .route("/static/copy.js", get(copy_js))
        .route("/static/img/{file}", get(image))
        .route("/login", get(login_form).post(login))
        .route("/user/", get(dashboard))
        .route("/user/logout", get(logout_form).post(logout))
        .route("/user/passwd", get(passwd_form).post(passwd))
        .route(
            "/user/profile",
            get(profile_form)
                .post(profile)
                // The avatar plus the form's other fields and the multipart framing.
                .layer(axum::extract::DefaultBodyLimit::max(
                    state.settings().max_avatar_size.saturating_add(64 * 1024),
                )),
        )
        .route("/user/manage_data", get(manage_data_form).post(export_data))
        .route("/avatar/{from}/{code}", get(avatar))
        .route("/admin/", get(admin_home))
        .route("/admin/invitations", get(invitations))
        .route("/admin/invitation/-/new", post(create_invitation))
        .route("/admin/invitation/{id}", get(invitation))
        .route("/admin/invitation/{id}/revoke", post(revoke_invitation))
        .merge(crate::admin::routes())
        .merge(crate::public::routes())
        .route(
            "/invite/success",
            get(invite_success)
                .post(import_data)
                .layer(axum::extract::DefaultBodyLimit::max(MAX_IMPORT_BODY)),
        )
        .route("/invite/{token}/", get(invite_landing))
        .route(
            "/invite/{token}/register",
            get(register_form).post(register),
        )
        .route("/invite/{token}/reset", get(reset_form).post(reset))
        .route("/invite/success/reset", get(reset_success))
        .fallback(not_found)
        .layer(axum::middleware::from_fn(web::security_headers))
        .with_state(state)
}

async fn health() -> Response {
    ([(header::CONTENT_TYPE, "text/plain")], "STATUS OK").into_response()
}

async fn style() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        web::STYLE,
    )
        .into_response()
}

async fn copy_js() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        web::COPY_JS,
    )
        .into_response()
}

async fn image(
    State(st): State<AppState>,
    headers: HeaderMap,
    axum::extract::Path(file): axum::extract::Path<String>,
) -> Response {
    match web::IMAGES.iter().find(|(name, _, _)| *name == file) {
        Some((_, mime, bytes)) => (
            [
                (header::CONTENT_TYPE, *mime),
                (header::CACHE_CONTROL, "public, max-age=86400"),
            ],
            *bytes,
        )
            .into_response(),
        None => st.fail(&headers, Fail::NotFound),
    }
}

async fn not_found(State(st): State<AppState>, headers: HeaderMap) -> Response {
    st.fail(&headers, Fail::NotFound)
}

async fn index(State(st): State<AppState>, headers: HeaderMap) -> Response {
    if st.session(&headers).is_some() {
        Redirect::to("/user/").into_response()
    } else {
        Redirect::to("/login").into_response()
    }
}

/// The TCP peer, when the app is served with connect info (tests call it without).
struct Peer(Option<SocketAddr>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Peer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(Peer(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0),
        ))
    }
}

/// The client address: the proxy's `X-Forwarded-For` when the peer is loopback.
fn client_ip(headers: &HeaderMap, peer: Option<SocketAddr>) -> IpAddr {
    let peer_ip = peer.map_or(IpAddr::from([127, 0, 0, 1]), |p| p.ip());
    if peer_ip.is_loopback() {
        let forwarded = headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .and_then(|v| v.trim().parse().ok());
        if let Some(ip) = forwarded {
            return ip;
        }
    }
    peer_ip
}

fn require_user(st: &AppState, headers: &HeaderMap) -> Result<Session, Fail> {
    st.session(headers).ok_or(Fail::Login)
}

pub(crate) fn require_admin(st: &AppState, headers: &HeaderMap) -> Result<Session, Fail> {
    let s = require_user(st, headers)?;
    if s.admin {
        Ok(s)
    } else {
        Err(Fail::Forbidden)
    }
}

// ---------------------------------------------------------------------------------------------
// Login and user pages

#[derive(Deserialize)]
struct LoginForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    user: String,
    #[serde(default)]
    password: String,
}

async fn login_form(State(st): State<AppState>, headers: HeaderMap) -> Response {
    // Already signed in (spec 5.3): straight to the dashboard.
    if st.session(&headers).is_some() {
        return Redirect::to("/user/").into_response();
    }
    let ctx = st.ctx(&headers);
    st.render(&ctx, StatusCode::OK, "login.html", json!({"form_user": ""}))
}

/// `user` or `user@DOMAIN` → localpart; another domain is refused.
fn localpart(input: &str, domain: &str) -> Option<String> {
    let input = input.trim();
    match input.rsplit_once('@') {
        Some((local, d)) if d.eq_ignore_ascii_case(domain) && !local.is_empty() => {
            Some(local.to_string())
        }
        Some(_) => None,
        None if !input.is_empty() => Some(input.to_string()),
        None => None,
    }
}

async fn login(
    State(st): State<AppState>,
    Peer(peer): Peer,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let r = async {
        st.check_csrf(&headers, &form.csrf)?;
        let ctx = st.ctx(&headers);
        let ip = client_ip(&headers, peer);
        let again = |reason: &str, status| {
            st.render(
                &ctx,
                status,
                "login.html",
                json!({"form_user": form.user, "error": crate::backend::friendly(reason)}),
            )
        };
        if !st.throttle().allowed(ip) {
            tracing::warn!(%ip, "login throttled");
            return Ok(again("throttled", StatusCode::TOO_MANY_REQUESTS));
        }
        let Some(user) = localpart(&form.user, &st.settings().domain) else {
            st.throttle().failed(ip);
            return Ok(again("invalid-credentials", StatusCode::UNAUTHORIZED));
        };
        match st.backend().login(&user, &form.password).await {
            Ok(resp) => {
                st.throttle().succeeded(ip);
                let s = Session {
                    admin: resp.role == api::Role::Admin as i32
                        || resp.scopes.iter().any(|x| x == "prosody:admin"),
                    token: resp.session_token,
                    username: resp.username,
                    jid: resp.jid,
                    expires_at: resp.expires_at.min(now() + session::SESSION_SECONDS),
                };
                tracing::info!(user = %s.username, "portal login");
                let mut r = Redirect::to("/user/").into_response();
                if let Ok(v) = HeaderValue::from_str(&st.session_cookie(&s)) {
                    r.headers_mut().append(header::SET_COOKIE, v);
                }
                Ok(r)
            }
            Err(e) => {
                let fail = Fail::from(e);
                match fail {
                    Fail::Refused(reason) => {
                        st.throttle().failed(ip);
                        Ok(again(&reason, StatusCode::UNAUTHORIZED))
                    }
                    Fail::Forbidden => Ok(again("account-disabled", StatusCode::FORBIDDEN)),
                    Fail::Login => {
                        st.throttle().failed(ip);
                        Ok(again("invalid-credentials", StatusCode::UNAUTHORIZED))
                    }
                    other => Err(other),
                }
            }
        }
    }
    .await;
    st.done(&headers, r)
}

async fn dashboard(State(st): State<AppState>, headers: HeaderMap) -> Response {
    let r = async {
        let s = require_user(&st, &headers)?;
        let profile = st.backend().profile_of(&s.token).await?;
        let ctx = st.ctx(&headers);
        Ok(st.render(
            &ctx,
            StatusCode::OK,
            "dashboard.html",
            json!({"profile": {
                "username": profile.username,
                "jid": profile.jid,
                "display_name": profile.display_name,
            }}),
        ))
    }
    .await;
    st.done(&headers, r)
}

#[derive(Deserialize)]
pub(crate) struct CsrfOnly {
    #[serde(default)]
    pub(crate) csrf: String,
}

/// The sign-out confirmation (spec 5.4.6); the form posts to the same address.
async fn logout_form(State(st): State<AppState>, headers: HeaderMap) -> Response {
    let r = require_user(&st, &headers).map(|_| {
        let ctx = st.ctx(&headers);
        st.render(&ctx, StatusCode::OK, "logout.html", json!({}))
    });
    st.done(&headers, r)
}

async fn logout(
    State(st): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<CsrfOnly>,
) -> Response {
    let r = async {
        st.check_csrf(&headers, &form.csrf)?;
        if let Some(s) = st.session(&headers) {
            if let Err(e) = st.backend().logout(&s.token).await {
                tracing::warn!(user = %s.username, error = %e, "revoking the server session failed");
            }
        }
        let mut r = Redirect::to("/login").into_response();
        if let Ok(v) = HeaderValue::from_str(&session::set_cookie(SESSION_COOKIE, "", 0)) {
            r.headers_mut().append(header::SET_COOKIE, v);
        }
        Ok(r)
    }
    .await;
    st.done(&headers, r)
}

#[derive(Deserialize)]
struct PasswdForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    old_password: String,
    #[serde(default)]
    new_password: String,
    #[serde(default)]
    confirm: String,
}

async fn passwd_form(State(st): State<AppState>, headers: HeaderMap) -> Response {
    let r = require_user(&st, &headers).map(|_| {
        let ctx = st.ctx(&headers);
        st.render(&ctx, StatusCode::OK, "passwd.html", json!({}))
    });
    st.done(&headers, r)
}

async fn passwd(
    State(st): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<PasswdForm>,
) -> Response {
    let r = async {
        let s = require_user(&st, &headers)?;
        st.check_csrf(&headers, &form.csrf)?;
        let ctx = st.ctx(&headers);
        let page = |status, key: &str, msg: &str| {
            st.render(&ctx, status, "passwd.html", json!({ key: msg }))
        };
        if form.new_password != form.confirm {
            return Ok(page(
                StatusCode::BAD_REQUEST,
                "error",
                n_("The new passwords do not match."),
            ));
        }
        if form.new_password.chars().count() < 10 {
            return Ok(page(
                StatusCode::BAD_REQUEST,
                "error",
                crate::backend::friendly("weak-password"),
            ));
        }
        match st
            .backend()
            .change_password(&s.token, &form.old_password, &form.new_password)
            .await
            .map_err(Fail::from)
        {
            Ok(()) => Ok(page(
                StatusCode::OK,
                "notice",
                n_("Your password has been changed."),
            )),
            Err(Fail::Refused(reason)) => Ok(page(
                StatusCode::BAD_REQUEST,
                "error",
                crate::backend::friendly(&reason),
            )),
            Err(e) => Err(e),
        }
    }
    .await;
    st.done(&headers, r)
}

#[derive(Deserialize, Default)]
struct ProfileForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    nickname: String,
    #[serde(default)]
    profile_access_model: String,
}

/// Visibility choices of the profile page (spec 5.4.4).
const ACCESS_MODELS: [(&str, &str); 3] = [
    ("whitelist", n_("Nobody")),
    ("presence", n_("Friends only")),
    ("open", n_("Everyone")),
];

/// Profile (spec 5.4.4): display name (the PEP nickname), avatar and who may see them.
async fn profile_form(State(st): State<AppState>, headers: HeaderMap, uri: http::Uri) -> Response {
    let r = async {
        let s = require_user(&st, &headers)?;
        let updated = uri
            .query()
            .is_some_and(|q| q.split('&').any(|pair| pair == "done=updated"));
        let notice = updated.then_some(("notice", n_("Profile updated")));
        profile_page(&st, &headers, &s.token, StatusCode::OK, notice).await
    }
    .await;
    st.done(&headers, r)
}

/// The profile form, prefilled, with an optional (`notice`|`error`, text).
async fn profile_page(
    st: &AppState,
    headers: &HeaderMap,
    token: &str,
    status: StatusCode,
    message: Option<(&str, &str)>,
) -> Result<Response, Fail> {
    let profile = st.backend().profile_of(token).await?;
    let details = st.backend().profile_details(token).await?;
    let ctx = st.ctx(headers);
    let models: Vec<_> = ACCESS_MODELS
        .iter()
        .map(
            |(v, label)| json!({"value": v, "label": label, "checked": *v == details.access_model}),
        )
        .collect();
    let data = json!({
        "profile": {
            "username": profile.username,
            "display_name": if details.nickname.is_empty() { profile.display_name } else { details.nickname },
            "avatar": avatar_path(&profile.jid, &details.avatar_hash),
        },
        "access_models": models,
    });
    let data = web::with_message(data, message);
    Ok(st.render(&ctx, status, "profile.html", data))
}

/// `/avatar/<base64url jid>/<base64url of the hash's first 8 bytes>` (spec 5.4.7); `None` without
/// an avatar.
pub(crate) fn avatar_path(jid: &str, sha1_hex: &str) -> Option<String> {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let bytes = hex_bytes(sha1_hex)?;
    let code = b64.encode(bytes.get(..8)?);
    Some(format!("/avatar/{}/{code}", b64.encode(jid)))
}

fn hex_bytes(hex: &str) -> Option<Vec<u8>> {
    if hex.len() % 2 != 0 {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The profile form, sent as multipart (with a file) or urlencoded (without).
async fn read_profile_form(
    st: &AppState,
    req: axum::extract::Request,
) -> Result<(ProfileForm, Option<(Vec<u8>, String)>), Fail> {
    use axum::extract::FromRequest;
    let multipart = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"));
    if !multipart {
        let Form(form) = Form::<ProfileForm>::from_request(req, st)
            .await
            .map_err(|_| Fail::Refused("invalid-argument".into()))?;
        return Ok((form, None));
    }
    let mut parts = axum::extract::Multipart::from_request(req, st)
        .await
        .map_err(|_| Fail::Refused("invalid-argument".into()))?;
    let mut form = ProfileForm::default();
    let mut avatar = None;
    while let Some(field) = parts
        .next_field()
        .await
        .map_err(|_| Fail::Refused("invalid-argument".into()))?
    {
        let name = field.name().unwrap_or_default().to_string();
        let mime = field.content_type().unwrap_or("image/png").to_string();
        let bytes = field
            .bytes()
            .await
            .map_err(|_| Fail::Refused("avatar-too-big".into()))?;
        let text = || String::from_utf8_lossy(&bytes).into_owned();
        match name.as_str() {
            "csrf" => form.csrf = text(),
            "nickname" => form.nickname = text(),
            "profile_access_model" => form.profile_access_model = text(),
            "avatar" if bytes.len() > st.settings().max_avatar_size => {
                return Err(Fail::Refused("avatar-too-big".into()))
            }
            "avatar" if !bytes.is_empty() => avatar = Some((bytes.to_vec(), mime)),
            _ => {}
        }
    }
    Ok((form, avatar))
}

async fn profile(State(st): State<AppState>, req: axum::extract::Request) -> Response {
    let headers = req.headers().clone();
    let r = async {
        let s = require_user(&st, &headers)?;
        let (form, avatar) = read_profile_form(&st, req).await?;
        st.check_csrf(&headers, &form.csrf)?;
        let (avatar, avatar_type) = avatar.unwrap_or_default();
        let update = api::UpdateProfileRequest {
            nickname: Some(form.nickname.trim().to_string()),
            avatar,
            avatar_type,
            access_model: form.profile_access_model,
        };
        match st.backend().update_profile(&s.token, update).await {
            Ok(_) => Ok(Redirect::to("/user/profile?done=updated").into_response()),
            Err(e) => match Fail::from(e) {
                Fail::Refused(reason) => {
                    let text = crate::backend::friendly(&reason);
                    profile_page(
                        &st,
                        &headers,
                        &s.token,
                        StatusCode::BAD_REQUEST,
                        Some(("error", text)),
                    )
                    .await
                }
                other => Err(other),
            },
        }
    }
    .await;
    st.done(&headers, r)
}

/// An avatar image (spec 5.4.7), for signed-in users allowed to see it.
async fn avatar(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path((from, _code)): Path<(String, String)>,
) -> Response {
    use base64::Engine;
    let r = async {
        let s = require_user(&st, &headers)?;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let jid = b64
            .decode(from.as_bytes())
            .ok()
            .and_then(|j| String::from_utf8(j).ok())
            .ok_or(Fail::NotFound)?;
        let a = match st.backend().avatar(&s.token, &jid).await {
            Ok(a) => a,
            Err(e) => {
                return match Fail::from(e) {
                    Fail::Refused(_) => Err(Fail::NotFound),
                    other => Err(other),
                }
            }
        };
        let etag = format!("\"{}\"", b64.encode(hex_bytes(&a.sha1).unwrap_or_default()));
        let mut resp = if headers
            .get(header::IF_NONE_MATCH)
            .is_some_and(|v| v.as_bytes() == etag.as_bytes())
        {
            StatusCode::NOT_MODIFIED.into_response()
        } else {
            a.data.into_response()
        };
        let h = resp.headers_mut();
        let mime =
            HeaderValue::from_str(&a.mime_type).unwrap_or(HeaderValue::from_static("image/png"));
        h.insert(header::CONTENT_TYPE, mime);
        if let Ok(v) = HeaderValue::from_str(&etag) {
            h.insert(header::ETAG, v);
        }
        let ttl = st.settings().avatar_cache_ttl;
        if let Ok(v) = HeaderValue::from_str(&format!("private, max-age={ttl}")) {
            h.insert(header::CACHE_CONTROL, v);
        }
        let expires = std::time::SystemTime::now() + std::time::Duration::from_secs(ttl.into());
        if let Ok(v) = HeaderValue::from_str(&httpdate::fmt_http_date(expires)) {
            h.insert(header::EXPIRES, v);
        }
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "frame-ancestors 'none'; default-src 'none'; style-src 'unsafe-inline'",
            ),
        );
        Ok(resp)
    }
    .await;
    st.done(&headers, r)
}

// ---------------------------------------------------------------------------------------------
// Admin pages

async fn admin_home(State(st): State<AppState>, headers: HeaderMap) -> Response {
    let r = require_admin(&st, &headers).map(|_| {
        let ctx = st.ctx(&headers);
        st.render(&ctx, StatusCode::OK, "admin_home.html", json!({}))
    });
    st.done(&headers, r)
}

fn kind_label(i: &api::Invitation) -> &'static str {
    match api::InvitationKind::try_from(i.kind) {
        Ok(api::InvitationKind::Contact) => n_("Contact"),
        Ok(api::InvitationKind::PasswordReset) => n_("Password reset"),
        _ if i.reusable => n_("Group"),
        _ => n_("Individual"),
    }
}

fn invite_view(
    tr: &crate::i18n::Tr,
    i: &api::Invitation,
    now: i64,
    circles: &[api::Circle],
) -> serde_json::Value {
    let names: Vec<String> = i
        .circles
        .iter()
        .map(|id| {
            circles
                .iter()
                .find(|c| &c.id == id)
                .map_or_else(|| tr.gettext("deleted").to_string(), |c| c.name.clone())
        })
        .collect();
    json!({
        "circles": names.join(", "),
        "id": i.id,
        "kind": kind_label(i),
        "expires": tr.gettext_with("expires %(when)s", &[("when", &web::relative(tr, now, i.expires_at))]),
        "expires_iso": web::iso(i.expires_at),
        "note": i.note,
        "link": i.landing_url,
    })
}

#[derive(Deserialize, Default, serde::Serialize)]
struct InviteForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    ttl: String,
    #[serde(default)]
    role: String,
    #[serde(default)]
    note: String,
    #[serde(default)]
    circle: String,
}

fn default_invite_form() -> InviteForm {
    InviteForm {
        kind: "account".into(),
        ttl: "604800".into(),
        role: "normal".into(),
        ..InviteForm::default()
    }
}

async fn invitations_page(
    st: &AppState,
    headers: &HeaderMap,
    s: &Session,
    form: InviteForm,
    status: StatusCode,
    message: Option<(&str, &str)>,
) -> Result<Response, Fail> {
    let list = st.backend().list_invitations(&s.token).await?;
    let mut circles = st.backend().list_circles(&s.token).await?;
    circles.sort_by_key(|c| c.name.to_lowercase());
    let now = now();
    let tr = st.tr(headers);
    let invites: Vec<_> = list
        .iter()
        .map(|i| invite_view(&tr, i, now, &circles))
        .collect();
    let selected = if form.circle.is_empty() {
        circles
            .iter()
            .find(|c| c.is_default)
            .map(|c| c.id.clone())
            .unwrap_or_default()
    } else {
        form.circle.clone()
    };
    let circle_options: Vec<_> = circles
        .iter()
        .map(|c| json!({"id": c.id, "name": c.name, "selected": c.id == selected}))
        .collect();
    let ctx = st.ctx(headers);
    let data = json!({
        "invites": invites,
        "lifetimes": LIFETIMES,
        "circles": circle_options,
        "form": {"kind": form.kind, "ttl": form.ttl, "role": form.role, "note": form.note},
    });
    Ok(st.render(
        &ctx,
        status,
        "admin_invitations.html",
        web::with_message(data, message),
    ))
}

async fn invitations(
    State(st): State<AppState>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Response {
    let r = async {
        let s = require_admin(&st, &headers)?;
        invitations_page(
            &st,
            &headers,
            &s,
            default_invite_form(),
            StatusCode::OK,
            crate::admin::notice(&uri).map(|n| ("notice", n)),
        )
        .await
    }
    .await;
    st.done(&headers, r)
}

async fn create_invitation(
    State(st): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<InviteForm>,
) -> Response {
    let r = async {
        let s = require_admin(&st, &headers)?;
        st.check_csrf(&headers, &form.csrf)?;
        let kind = match form.kind.as_str() {
            "group" => api::InvitationKind::Group,
            _ => api::InvitationKind::Account,
        };
        let role = match form.role.as_str() {
            "limited" => api::Role::Limited,
            "admin" => api::Role::Admin,
            _ => api::Role::Normal,
        };
        let Some(ttl) = LIFETIMES
            .iter()
            .find(|(v, _)| *v == form.ttl)
            .and_then(|(v, _)| v.parse::<i64>().ok())
        else {
            return invitations_page(
                &st,
                &headers,
                &s,
                form,
                StatusCode::BAD_REQUEST,
                Some((
                    "error",
                    n_("Please choose how long the invitation is valid."),
                )),
            )
            .await;
        };
        if form.circle.trim().is_empty() {
            return invitations_page(
                &st,
                &headers,
                &s,
                form,
                StatusCode::BAD_REQUEST,
                Some(("error", n_("At least one circle must be selected."))),
            )
            .await;
        }
        let note = form.note.trim().chars().take(200).collect::<String>();
        let req = api::CreateInvitationRequest {
            kind: kind as i32,
            role: role as i32,
            circles: vec![form.circle.trim().to_string()],
            note,
            ttl_seconds: ttl,
        };
        match st
            .backend()
            .create_invitation(&s.token, req)
            .await
            .map_err(Fail::from)
        {
            Ok(inv) => {
                tracing::info!(user = %s.username, invite = %inv.id, "invitation created");
                Ok(Redirect::to(&format!("/admin/invitation/{}", inv.id)).into_response())
            }
            Err(Fail::Refused(reason)) => {
                invitations_page(
                    &st,
                    &headers,
                    &s,
                    form,
                    StatusCode::BAD_REQUEST,
                    Some(("error", crate::backend::friendly(&reason))),
                )
                .await
            }
            Err(e) => Err(e),
        }
    }
    .await;
    st.done(&headers, r)
}

/// Invitation ids are short base64url-ish strings; anything else is not found.
pub(crate) fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

async fn invitation(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let r = async {
        let s = require_admin(&st, &headers)?;
        if !valid_id(&id) {
            return Err(Fail::NotFound);
        }
        let inv = match st.backend().get_invitation(&s.token, &id).await {
            Ok(inv) => inv,
            Err(e) => match Fail::from(e) {
                Fail::NotFound => {
                    return invitations_page(
                        &st,
                        &headers,
                        &s,
                        default_invite_form(),
                        StatusCode::NOT_FOUND,
                        Some(("error", n_("No such invitation exists."))),
                    )
                    .await
                }
                other => return Err(other),
            },
        };
        let circles = st.backend().list_circles(&s.token).await?;
        let ctx = st.ctx(&headers);
        Ok(st.render(
            &ctx,
            StatusCode::OK,
            "admin_invitation.html",
            json!({
                "invite": invite_view(&ctx.tr, &inv, now(), &circles),
                "qr_svg": web::qr_svg(&inv.landing_url),
            }),
        ))
    }
    .await;
    st.done(&headers, r)
}

async fn revoke_invitation(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<CsrfOnly>,
) -> Response {
    let r = async {
        let s = require_admin(&st, &headers)?;
        st.check_csrf(&headers, &form.csrf)?;
        if !valid_id(&id) {
            return Err(Fail::NotFound);
        }
        st.backend().revoke_invitation(&s.token, &id).await?;
        tracing::info!(user = %s.username, invite = %id, "invitation revoked");
        Ok(Redirect::to("/admin/invitations?done=invitation-revoked").into_response())
    }
    .await;
    st.done(&headers, r)
}

// ---------------------------------------------------------------------------------------------
// Public invite pages

/// Tokens are short ASCII strings; anything else is unknown.
fn valid_token(token: &str) -> bool {
    valid_id(token)
}

async fn invite_landing(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(token): Path<String>,
) -> Response {
    let r = async {
        if !valid_token(&token) {
            return Err(Fail::NotFound);
        }
        let invite = st.backend().public_invite(&token).await?;
        if invite.reset {
            return Ok(Redirect::to(&format!("/invite/{token}/reset")).into_response());
        }
        let ctx = st.ctx(&headers);
        let play_url = format!(
            "https://play.google.com/store/apps/details?id=org.snikket.android&referrer={}&pcampaignid=pcampaignidMKT-Other-global-all-co-prtnr-py-PartBadge-Mar2515-1",
            web::pct_encode(&invite.xmpp_uri)
        );
        let mut resp = st.render(
            &ctx,
            StatusCode::OK,
            "invite.html",
            json!({
                "token": token,
                "invite": {"inviter": invite.inviter, "xmpp_uri": invite.xmpp_uri},
                "play_url": play_url,
                "apple_url": st.settings().apple_store_url,
                "qr_svg": web::qr_svg(&invite.landing_url),
            }),
        );
        let h = resp.headers_mut();
        if let Ok(v) = HeaderValue::from_str(&format!("<{}>; rel=\"alternate\"", invite.xmpp_uri)) {
            h.insert(header::LINK, v);
        }
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
        h.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("Link"),
        );
        Ok(resp)
    }
    .await;
    match r {
        Err(Fail::NotFound) => invite_expired(&st, &headers),
        other => st.done(&headers, other),
    }
}

fn invite_expired(st: &AppState, headers: &HeaderMap) -> Response {
    let ctx = st.ctx(headers);
    st.render(
        &ctx,
        StatusCode::NOT_FOUND,
        "error.html",
        json!({
            "heading": n_("Invite expired"),
            "message": n_("Sorry, it looks like this invitation link has expired!"),
        }),
    )
}

#[derive(Deserialize)]
struct RegisterForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    localpart: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    password_confirm: String,
}

fn register_page(
    st: &AppState,
    headers: &HeaderMap,
    token: &str,
    invite: &api::PublicInvite,
    localpart: &str,
    status: StatusCode,
    error: Option<&str>,
) -> Response {
    let ctx = st.ctx(headers);
    let localpart = if invite.username.is_empty() {
        localpart
    } else {
        invite.username.as_str()
    };
    st.render(
        &ctx,
        status,
        "invite_register.html",
        json!({
            "token": token,
            "reset": invite.reset,
            "xmpp_uri": invite.xmpp_uri,
            "fixed_username": !invite.username.is_empty(),
            "form_localpart": localpart,
            "error": error,
        }),
    )
}

async fn register_form(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(token): Path<String>,
) -> Response {
    let r = async {
        if !valid_token(&token) {
            return Err(Fail::NotFound);
        }
        let invite = st.backend().public_invite(&token).await?;
        if invite.reset {
            return Ok(Redirect::to(&format!("/invite/{token}/reset")).into_response());
        }
        Ok(register_page(
            &st,
            &headers,
            &token,
            &invite,
            "",
            StatusCode::OK,
            None,
        ))
    }
    .await;
    match r {
        Err(Fail::NotFound) => Redirect::to(&format!("/invite/{token}/")).into_response(),
        other => st.done(&headers, other),
    }
}

async fn register(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(token): Path<String>,
    Form(form): Form<RegisterForm>,
) -> Response {
    let r = async {
        if !valid_token(&token) {
            return Err(Fail::NotFound);
        }
        st.check_csrf(&headers, &form.csrf)?;
        let invite = st.backend().public_invite(&token).await?;
        if invite.reset {
            return Ok(Redirect::to(&format!("/invite/{token}/reset")).into_response());
        }
        let again = |status, msg: &str| {
            Ok(register_page(
                &st,
                &headers,
                &token,
                &invite,
                form.localpart.trim(),
                status,
                Some(msg),
            ))
        };
        if form.localpart.trim().is_empty() && invite.username.is_empty() {
            return again(StatusCode::BAD_REQUEST, n_("Please choose a username."));
        }
        if form.password != form.password_confirm {
            return again(StatusCode::BAD_REQUEST, n_("The passwords must match."));
        }
        if form.password.chars().count() < 10 {
            return again(
                StatusCode::BAD_REQUEST,
                n_("The password must be at least 10 characters long."),
            );
        }
        let done = match st
            .backend()
            .register(&token, form.localpart.trim(), &form.password)
            .await
            .map_err(Fail::from)
        {
            Ok(done) => done,
            Err(Fail::Refused(reason)) => {
                return again(StatusCode::BAD_REQUEST, crate::backend::friendly(&reason))
            }
            Err(Fail::Forbidden) => {
                return again(
                    StatusCode::FORBIDDEN,
                    n_("Registration was declined for unknown reasons."),
                )
            }
            Err(e) => return Err(e),
        };
        tracing::info!(user = %done.username, "registered through an invitation");
        // Log the new user in, so the success page can show the address.
        let login = st.backend().login(&done.username, &form.password).await?;
        let s = Session {
            admin: login.role == api::Role::Admin as i32,
            token: login.session_token,
            username: login.username,
            jid: login.jid,
            expires_at: login.expires_at.min(now() + session::SESSION_SECONDS),
        };
        let mut r = Redirect::to("/invite/success").into_response();
        if let Ok(v) = HeaderValue::from_str(&st.session_cookie(&s)) {
            r.headers_mut().append(header::SET_COOKIE, v);
        }
        Ok(r)
    }
    .await;
    match r {
        Err(Fail::NotFound) => Redirect::to(&format!("/invite/{token}/")).into_response(),
        other => st.done(&headers, other),
    }
}

async fn reset_form(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(token): Path<String>,
) -> Response {
    let r = async {
        if !valid_token(&token) {
            return Err(Fail::NotFound);
        }
        let invite = st.backend().public_invite(&token).await?;
        if !invite.reset {
            return Ok(Redirect::to(&format!("/invite/{token}/register")).into_response());
        }
        Ok(register_page(
            &st,
            &headers,
            &token,
            &invite,
            "",
            StatusCode::OK,
            None,
        ))
    }
    .await;
    match r {
        Err(Fail::NotFound) => Redirect::to(&format!("/invite/{token}/")).into_response(),
        other => st.done(&headers, other),
    }
}

async fn reset(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(token): Path<String>,
    Form(form): Form<RegisterForm>,
) -> Response {
    let r = async {
        if !valid_token(&token) {
            return Err(Fail::NotFound);
        }
        st.check_csrf(&headers, &form.csrf)?;
        let invite = st.backend().public_invite(&token).await?;
        if !invite.reset {
            return Ok(Redirect::to(&format!("/invite/{token}/register")).into_response());
        }
        let again = |status, msg: &str| {
            Ok(register_page(
                &st,
                &headers,
                &token,
                &invite,
                "",
                status,
                Some(msg),
            ))
        };
        if form.password != form.password_confirm {
            return again(StatusCode::BAD_REQUEST, n_("The passwords must match."));
        }
        if form.password.chars().count() < 10 {
            return again(
                StatusCode::BAD_REQUEST,
                n_("The password must be at least 10 characters long."),
            );
        }
        match st
            .backend()
            .register(&token, &invite.username, &form.password)
            .await
            .map_err(Fail::from)
        {
            Ok(done) => {
                tracing::info!(user = %done.username, "password reset through an invitation");
                Ok(Redirect::to("/invite/success/reset").into_response())
            }
            Err(Fail::Refused(reason)) => {
                again(StatusCode::BAD_REQUEST, crate::backend::friendly(&reason))
            }
            Err(Fail::Forbidden) => again(
                StatusCode::FORBIDDEN,
                n_("The password reset was declined for unknown reasons."),
            ),
            Err(e) => Err(e),
        }
    }
    .await;
    match r {
        Err(Fail::NotFound) => Redirect::to(&format!("/invite/{token}/")).into_response(),
        other => st.done(&headers, other),
    }
}

async fn reset_success(State(st): State<AppState>, headers: HeaderMap) -> Response {
    let ctx = st.ctx(&headers);
    st.render(
        &ctx,
        StatusCode::OK,
        "error.html",
        json!({
            "heading": n_("Password reset successful"),
            "message": n_("Your password has been changed. You can now log in using your new password. You can now safely close this page."),
        }),
    )
}

async fn invite_success(State(st): State<AppState>, headers: HeaderMap) -> Response {
    let r = require_user(&st, &headers).map(|s| {
        let ctx = st.ctx(&headers);
        st.render(
            &ctx,
            StatusCode::OK,
            "invite_success.html",
            json!({"jid": s.jid}),
        )
    });
    st.done(&headers, r)
}

/// Largest account data file accepted for import (spec 5.6.3).
const MAX_IMPORT_FILE: usize = 5 * 1024 * 1024;
/// The request around it (multipart framing, the CSRF field).
const MAX_IMPORT_BODY: usize = MAX_IMPORT_FILE + 64 * 1024;

/// The "Moving to Snikket?" upload on the registration success page: a XEP-0227 file imported
/// into the new account.
async fn import_data(State(st): State<AppState>, req: axum::extract::Request) -> Response {
    use axum::extract::FromRequest;
    let headers = req.headers().clone();
    let r = async {
        let s = require_user(&st, &headers)?;
        let mut parts = axum::extract::Multipart::from_request(req, &st)
            .await
            .map_err(|_| Fail::Refused("invalid-argument".into()))?;
        let mut csrf = String::new();
        let mut file: Option<(Vec<u8>, String)> = None;
        let mut too_big = false;
        while let Ok(Some(field)) = parts.next_field().await {
            let name = field.name().unwrap_or_default().to_string();
            let mime = field.content_type().unwrap_or_default().to_string();
            match field.bytes().await {
                Ok(bytes) => match name.as_str() {
                    "csrf" => csrf = String::from_utf8_lossy(&bytes).into_owned(),
                    "account_data_file" => file = Some((bytes.to_vec(), mime)),
                    _ => {}
                },
                // Over the body limit.
                Err(_) => too_big = true,
            }
        }
        st.check_csrf(&headers, &csrf)?;
        let ctx = st.ctx(&headers);
        let page = |status, key: &str, msg: &str| {
            st.render(
                &ctx,
                status,
                "invite_success.html",
                json!({"jid": s.jid, key: msg}),
            )
        };
        let (bytes, mime) = match file {
            _ if too_big => {
                return Ok(page(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "error",
                    n_("The account data you tried to import is too large to upload. Please contact your Snikket operator."),
                ))
            }
            Some((b, _)) if b.len() > MAX_IMPORT_FILE => {
                return Ok(page(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "error",
                    n_("The account data you tried to import is too large to upload. Please contact your Snikket operator."),
                ))
            }
            Some((b, m)) if !b.is_empty() => (b, m),
            _ => {
                return Ok(page(
                    StatusCode::BAD_REQUEST,
                    "error",
                    n_("Please choose a file to import."),
                ))
            }
        };
        let base = mime.split(';').next().unwrap_or_default().trim();
        if !matches!(base, "application/xml" | "text/xml") {
            let provided = if base.is_empty() {
                ctx.tr.gettext("unknown")
            } else {
                base
            };
            let msg = ctx.tr.gettext_with(
                "The account data you tried to import is in an unknown format. Please upload an XML file in XEP-0227 format (provided format: %(format)s).",
                &[("format", provided)],
            );
            return Ok(page(StatusCode::BAD_REQUEST, "error", &msg));
        }
        match st.backend().import_account_data(&s.token, bytes).await {
            Ok(_) => Ok(page(StatusCode::OK, "notice", n_("Import successful"))),
            Err(e) if e.reason() == "not-xep227" => Ok(page(
                StatusCode::UNPROCESSABLE_ENTITY,
                "error",
                crate::backend::friendly("not-xep227"),
            )),
            Err(e) => Err(Fail::from(e)),
        }
    }
    .await;
    st.done(&headers, r)
}

async fn manage_data_form(State(st): State<AppState>, headers: HeaderMap) -> Response {
    let r = require_user(&st, &headers).map(|_| {
        let ctx = st.ctx(&headers);
        st.render(&ctx, StatusCode::OK, "manage_data.html", json!({}))
    });
    st.done(&headers, r)
}

/// The XEP-0227 download (spec 5.4.5).
async fn export_data(
    State(st): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<CsrfOnly>,
) -> Response {
    let r = async {
        let s = require_user(&st, &headers)?;
        st.check_csrf(&headers, &form.csrf)?;
        let data = st
            .backend()
            .export_account_data(&s.token)
            .await
            .map_err(Fail::from)?;
        if data.empty {
            let ctx = st.ctx(&headers);
            return Ok(st.render(
                &ctx,
                StatusCode::OK,
                "manage_data.html",
                json!({"error": n_("You currently have no account data to export.")}),
            ));
        }
        let disposition = format!(
            "attachment; filename=\"account-data.xml\"; filename*=UTF-8''account-data-{}.xml",
            web::pct_encode(&data.jid)
        );
        let mut resp = (StatusCode::OK, data.xml).into_response();
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/xml; charset=utf-8"),
        );
        if let Ok(v) = HeaderValue::from_str(&disposition) {
            h.insert(header::CONTENT_DISPOSITION, v);
        }
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        Ok(resp)
    }
    .await;
    st.done(&headers, r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_names() {
        assert_eq!(
            localpart(" alice ", "example.org").as_deref(),
            Some("alice")
        );
        assert_eq!(
            localpart("alice@Example.org", "example.org").as_deref(),
            Some("alice")
        );
        assert_eq!(localpart("alice@other.org", "example.org"), None);
        assert_eq!(localpart("", "example.org"), None);
    }

    #[test]
    fn forwarded_address_only_from_loopback() {
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("1.2.3.4, 5.6.7.8"),
        );
        let lo: SocketAddr = ([127, 0, 0, 1], 1).into();
        let far: SocketAddr = ([9, 9, 9, 9], 1).into();
        assert_eq!(client_ip(&h, Some(lo)), IpAddr::from([5, 6, 7, 8]));
        assert_eq!(client_ip(&h, Some(far)), IpAddr::from([9, 9, 9, 9]));
    }
}
