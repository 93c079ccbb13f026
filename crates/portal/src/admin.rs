//! Admin panel pages for users, circles and the system (spec 5.5.2, 5.5.3, 5.5.5, 5.5.6).
//!
//! Every page is built from the `Users`, `Circles` and `System` services. Actions are POST forms
//! with the CSRF token; a success redirects (303) to a page that shows a fixed notice chosen by
//! `?done=<code>`, a refusal re-renders the page with the reason's friendly text. The server
//! enforces the last-admin and default-circle rules; the portal only shows its refusals.

use crate::backend::friendly;
use crate::handlers::{require_admin, valid_id, CsrfOnly};
use crate::i18n::{n_, Tr};
use crate::session::Session;
use crate::web::{self, now, pct_encode, Fail};
use crate::AppState;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use http::{HeaderMap, StatusCode, Uri};
use serde::Deserialize;
use serde_json::{json, Value};
use snikket_rpc::snikket::admin::v1 as api;

/// Lifetime of a password-reset link made from the user page (spec 4.5).
const RESET_TTL: i64 = 86_400;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin/users", get(users))
        .route("/admin/user/{localpart}", get(user_slash))
        .route("/admin/user/{localpart}/", get(user).post(update_user))
        .route("/admin/user/{localpart}/lock", post(lock_user))
        .route("/admin/user/{localpart}/unlock", post(unlock_user))
        .route("/admin/user/{localpart}/restore", post(restore_user))
        .route("/admin/user/{localpart}/reset", post(create_reset))
        .route(
            "/admin/user/{localpart}/delete",
            get(delete_user_form).post(delete_user),
        )
        .route("/admin/user/{localpart}/debug", get(user_debug))
        .route(
            "/admin/users/password-reset/{id}",
            get(reset_link).post(revoke_reset_link),
        )
        .route("/admin/circles", get(circles))
        .route("/admin/circle/-/new", post(create_circle))
        .route("/admin/circle/{id}", get(circle_slash))
        .route("/admin/circle/{id}/", get(circle))
        .route("/admin/circle/{id}/rename", post(rename_circle))
        .route(
            "/admin/circle/{id}/delete",
            get(delete_circle_form).post(delete_circle),
        )
        .route("/admin/circle/{id}/members/add", post(add_member))
        .route("/admin/circle/{id}/members/remove", post(remove_member))
        .route(
            "/admin/circle/{id}/add_chat",
            get(add_chat_form).post(add_chat),
        )
        .route("/admin/circle/{id}/chats/remove", post(remove_chat))
        .route("/admin/system", get(system))
        .route("/admin/system/", get(system).post(announce))
}

// ---------------------------------------------------------------------------------------------
// Shared helpers

/// The fixed notice for a `?done=` code; unknown codes show nothing.
pub(crate) fn notice(uri: &Uri) -> Option<&'static str> {
    let code = uri
        .query()?
        .split('&')
        .find_map(|pair| pair.strip_prefix("done="))?;
    Some(match code {
        "updated" => n_("User information updated."),
        "locked" => n_("User account locked."),
        "unlocked" => n_("User account unlocked."),
        "restored" => n_("User account restored."),
        "deleted-user" => n_("User deleted."),
        "reset-revoked" => n_("Password reset link deleted."),
        "created" => n_("Circle created."),
        "renamed" => n_("Circle data updated."),
        "deleted-circle" => n_("Circle deleted."),
        "member-added" => n_("User added to circle."),
        "member-removed" => n_("User removed from circle."),
        "chat-added" => n_("New group chat added to circle."),
        "chat-removed" => n_("Chat removed from circle."),
        "announced" => n_("Announcement sent!"),
        "invitation-revoked" => n_("Invitation revoked"),
        _ => return None,
    })
}

/// Localparts as the server accepts them; anything else is not found.
fn valid_localpart(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 1023
        && !s
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "@/\"&'<>:".contains(c))
}

fn user_path(username: &str) -> String {
    format!("/admin/user/{}/", pct_encode(username))
}

fn role_key(role: i32) -> &'static str {
    match api::Role::try_from(role) {
        Ok(api::Role::Admin) => "admin",
        Ok(api::Role::Limited) => "limited",
        _ => "normal",
    }
}

fn role_label(role: i32) -> &'static str {
    match api::Role::try_from(role) {
        Ok(api::Role::Admin) => n_("Administrator"),
        Ok(api::Role::Limited) => n_("Limited"),
        _ => n_("Normal user"),
    }
}

fn state_key(state: i32) -> &'static str {
    match api::AccountState::try_from(state) {
        Ok(api::AccountState::Locked) => "locked",
        Ok(api::AccountState::PendingDeletion) => "deleted",
        _ => "active",
    }
}

fn user_view(tr: &Tr, u: &api::User, now: i64) -> Value {
    let state = state_key(u.state);
    json!({
        "username": u.username,
        "path": pct_encode(&u.username),
        "jid": u.jid,
        "display_name": u.display_name,
        "avatar": crate::handlers::avatar_path(&u.jid, &u.avatar_hash),
        "role": role_key(u.role),
        "role_label": role_label(u.role),
        "state": state,
        "state_label": match state {
            "locked" => n_("Locked"),
            "deleted" => n_("Deleted"),
            _ => n_("Active"),
        },
        "last_active": web::last_active(tr, now, u.last_active_at),
        "created": web::date(u.created_at),
        "deletion_requested": u.deletion_requested_at.map(web::date),
        "pending_until": u.pending_until.map(|t| web::relative(tr, now, t)),
    })
}

fn circle_name(tr: &Tr, c: &api::Circle) -> String {
    // Upstream shows a default circle literally named "default" as "Main".
    if c.is_default && c.name == "default" {
        tr.gettext("Main").to_string()
    } else {
        c.name.clone()
    }
}

/// The users list, with `error` (for "no such user" and the like).
async fn users_page(
    st: &AppState,
    headers: &HeaderMap,
    s: &Session,
    status: StatusCode,
    notice: Option<&str>,
    error: Option<&str>,
) -> Result<Response, Fail> {
    let list = st.backend().list_users(&s.token).await?;
    let now = now();
    let ctx = st.ctx(headers);
    let users: Vec<_> = list.iter().map(|u| user_view(&ctx.tr, u, now)).collect();
    Ok(st.render(
        &ctx,
        status,
        "admin_users.html",
        json!({"users": users, "notice": notice, "error": error}),
    ))
}

/// The edit page of `username`; an unknown user gives the list with an error.
async fn user_page(
    st: &AppState,
    headers: &HeaderMap,
    s: &Session,
    username: &str,
    status: StatusCode,
    notice: Option<&str>,
    error: Option<&str>,
) -> Result<Response, Fail> {
    let u = match st
        .backend()
        .get_user(&s.token, username)
        .await
        .map_err(Fail::from)
    {
        Ok(u) => u,
        Err(Fail::NotFound) => return no_such_user(st, headers, s).await,
        Err(e) => return Err(e),
    };
    let circles = st.backend().list_circles(&s.token).await?;
    let tr = st.tr(headers);
    let member_of: Vec<_> = circles
        .iter()
        .filter(|c| u.circles.contains(&c.id))
        .map(|c| json!({"id": c.id, "name": circle_name(&tr, c)}))
        .collect();
    let ctx = st.ctx(headers);
    Ok(st.render(
        &ctx,
        status,
        "admin_user.html",
        json!({
            "u": user_view(&ctx.tr, &u, now()),
            "circles": member_of,
            "notice": notice,
            "error": error,
        }),
    ))
}

/// A failed user call: unknown users go back to the list, refusals to the user page.
async fn user_failure(
    st: &AppState,
    headers: &HeaderMap,
    s: &Session,
    username: &str,
    f: Fail,
) -> Result<Response, Fail> {
    match f {
        Fail::NotFound => no_such_user(st, headers, s).await,
        Fail::Refused(reason) => {
            user_page(
                st,
                headers,
                s,
                username,
                StatusCode::BAD_REQUEST,
                None,
                Some(friendly(&reason)),
            )
            .await
        }
        other => Err(other),
    }
}

async fn no_such_user(st: &AppState, headers: &HeaderMap, s: &Session) -> Result<Response, Fail> {
    users_page(
        st,
        headers,
        s,
        StatusCode::NOT_FOUND,
        None,
        Some(friendly("user-not-found")),
    )
    .await
}

/// The admin session and a valid localpart, or the failure.
fn admin_and_user(st: &AppState, headers: &HeaderMap, localpart: &str) -> Result<Session, Fail> {
    let s = require_admin(st, headers)?;
    if valid_localpart(localpart) {
        Ok(s)
    } else {
        Err(Fail::NotFound)
    }
}

fn done(path: &str, code: &str) -> Response {
    Redirect::to(&format!("{path}?done={code}")).into_response()
}

// ---------------------------------------------------------------------------------------------
// Users

async fn users(State(st): State<AppState>, headers: HeaderMap, uri: Uri) -> Response {
    let r = async {
        let s = require_admin(&st, &headers)?;
        users_page(&st, &headers, &s, StatusCode::OK, notice(&uri), None).await
    }
    .await;
    st.done(&headers, r)
}

async fn user_slash(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(localpart): Path<String>,
) -> Response {
    let r = admin_and_user(&st, &headers, &localpart)
        .map(|_| Redirect::permanent(&user_path(&localpart)).into_response());
    st.done(&headers, r)
}

async fn user(
    State(st): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
    Path(localpart): Path<String>,
) -> Response {
    let r = async {
        let s = admin_and_user(&st, &headers, &localpart)?;
        user_page(
            &st,
            &headers,
            &s,
            &localpart,
            StatusCode::OK,
            notice(&uri),
            None,
        )
        .await
    }
    .await;
    st.done(&headers, r)
}

#[derive(Deserialize)]
struct UserForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    display_name: String,
    #[serde(default)]
    role: String,
}

async fn update_user(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(localpart): Path<String>,
    Form(form): Form<UserForm>,
) -> Response {
    let r = async {
        let s = admin_and_user(&st, &headers, &localpart)?;
        st.check_csrf(&headers, &form.csrf)?;
        let role = match form.role.as_str() {
            "limited" => api::Role::Limited,
            "normal" => api::Role::Normal,
            "admin" => api::Role::Admin,
            _ => {
                return user_page(
                    &st,
                    &headers,
                    &s,
                    &localpart,
                    StatusCode::BAD_REQUEST,
                    None,
                    Some(n_("Please choose a role.")),
                )
                .await
            }
        };
        let display_name = form.display_name.trim().to_string();
        match st
            .backend()
            .update_user(&s.token, &localpart, Some(display_name), role)
            .await
        {
            Ok(_) => {
                tracing::info!(admin = %s.username, user = %localpart, ?role, "user updated");
                Ok(done("/admin/users", "updated"))
            }
            Err(e) => user_failure(&st, &headers, &s, &localpart, e.into()).await,
        }
    }
    .await;
    st.done(&headers, r)
}

/// Which account-state action a form posts.
#[derive(Clone, Copy, Debug)]
enum StateAction {
    Lock,
    Unlock,
    Restore,
}

async fn state_action(
    st: AppState,
    headers: HeaderMap,
    localpart: String,
    form: CsrfOnly,
    action: StateAction,
) -> Response {
    let r = async {
        let s = admin_and_user(&st, &headers, &localpart)?;
        st.check_csrf(&headers, &form.csrf)?;
        let b = st.backend();
        let (result, path, code) = match action {
            StateAction::Lock => (
                b.lock_user(&s.token, &localpart).await,
                user_path(&localpart),
                "locked",
            ),
            StateAction::Unlock => (
                b.unlock_user(&s.token, &localpart).await,
                "/admin/users".to_string(),
                "unlocked",
            ),
            StateAction::Restore => (
                b.restore_user(&s.token, &localpart).await,
                "/admin/users".to_string(),
                "restored",
            ),
        };
        match result {
            Ok(_) => {
                tracing::info!(admin = %s.username, user = %localpart, ?action, "account state changed");
                Ok(done(&path, code))
            }
            Err(e) => user_failure(&st, &headers, &s, &localpart, e.into()).await,
        }
    }
    .await;
    st.done(&headers, r)
}

async fn lock_user(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(localpart): Path<String>,
    Form(form): Form<CsrfOnly>,
) -> Response {
    state_action(st, headers, localpart, form, StateAction::Lock).await
}

async fn unlock_user(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(localpart): Path<String>,
    Form(form): Form<CsrfOnly>,
) -> Response {
    state_action(st, headers, localpart, form, StateAction::Unlock).await
}

async fn restore_user(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(localpart): Path<String>,
    Form(form): Form<CsrfOnly>,
) -> Response {
    state_action(st, headers, localpart, form, StateAction::Restore).await
}

async fn delete_user_form(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(localpart): Path<String>,
) -> Response {
    let r = async {
        let s = admin_and_user(&st, &headers, &localpart)?;
        delete_user_page(&st, &headers, &s, &localpart, StatusCode::OK, None).await
    }
    .await;
    st.done(&headers, r)
}

async fn delete_user_page(
    st: &AppState,
    headers: &HeaderMap,
    s: &Session,
    localpart: &str,
    status: StatusCode,
    error: Option<&str>,
) -> Result<Response, Fail> {
    let u = match st.backend().get_user(&s.token, localpart).await {
        Ok(u) => u,
        Err(e) => return user_failure(st, headers, s, localpart, e.into()).await,
    };
    let ctx = st.ctx(headers);
    Ok(st.render(
        &ctx,
        status,
        "admin_user_delete.html",
        json!({"u": user_view(&ctx.tr, &u, now()), "error": error}),
    ))
}

async fn delete_user(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(localpart): Path<String>,
    Form(form): Form<CsrfOnly>,
) -> Response {
    let r = async {
        let s = admin_and_user(&st, &headers, &localpart)?;
        st.check_csrf(&headers, &form.csrf)?;
        match st
            .backend()
            .delete_user(&s.token, &localpart)
            .await
            .map_err(Fail::from)
        {
            Ok(()) => {
                tracing::info!(admin = %s.username, user = %localpart, "user deleted");
                Ok(done("/admin/users", "deleted-user"))
            }
            Err(Fail::Refused(reason)) => {
                delete_user_page(
                    &st,
                    &headers,
                    &s,
                    &localpart,
                    StatusCode::BAD_REQUEST,
                    Some(friendly(&reason)),
                )
                .await
            }
            Err(e) => user_failure(&st, &headers, &s, &localpart, e).await,
        }
    }
    .await;
    st.done(&headers, r)
}

async fn create_reset(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(localpart): Path<String>,
    Form(form): Form<CsrfOnly>,
) -> Response {
    let r = async {
        let s = admin_and_user(&st, &headers, &localpart)?;
        st.check_csrf(&headers, &form.csrf)?;
        match st
            .backend()
            .create_password_reset(&s.token, &localpart, RESET_TTL)
            .await
        {
            Ok(inv) => {
                tracing::info!(admin = %s.username, user = %localpart, invite = %inv.id, "password reset link created");
                Ok(Redirect::to(&format!("/admin/users/password-reset/{}", inv.id)).into_response())
            }
            Err(e) => user_failure(&st, &headers, &s, &localpart, e.into()).await,
        }
    }
    .await;
    st.done(&headers, r)
}

/// The pending password-reset invitation `id`, or `None` if there is none.
async fn find_reset(st: &AppState, s: &Session, id: &str) -> Result<Option<api::Invitation>, Fail> {
    if !valid_id(id) {
        return Ok(None);
    }
    match st
        .backend()
        .get_invitation(&s.token, id)
        .await
        .map_err(Fail::from)
    {
        Ok(inv)
            if inv.kind == api::InvitationKind::PasswordReset as i32
                && !inv.username.is_empty() =>
        {
            Ok(Some(inv))
        }
        Ok(_) | Err(Fail::NotFound) => Ok(None),
        Err(e) => Err(e),
    }
}

async fn reset_link(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let r = async {
        let s = require_admin(&st, &headers)?;
        let Some(inv) = find_reset(&st, &s, &id).await? else {
            return users_page(
                &st,
                &headers,
                &s,
                StatusCode::NOT_FOUND,
                None,
                Some(n_("Password reset link not found.")),
            )
            .await;
        };
        let ctx = st.ctx(&headers);
        Ok(st.render(
            &ctx,
            StatusCode::OK,
            "admin_reset.html",
            json!({
                "reset": {
                    "id": inv.id,
                    "username": inv.username,
                    "path": pct_encode(&inv.username),
                    "link": inv.landing_url,
                    "expires": web::date(inv.expires_at),
                    "expires_iso": web::iso(inv.expires_at),
                    "expires_rel": web::relative(&ctx.tr, now(), inv.expires_at),
                },
                "qr_svg": web::qr_svg(&inv.landing_url),
            }),
        ))
    }
    .await;
    st.done(&headers, r)
}

async fn revoke_reset_link(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<CsrfOnly>,
) -> Response {
    let r = async {
        let s = require_admin(&st, &headers)?;
        st.check_csrf(&headers, &form.csrf)?;
        let Some(inv) = find_reset(&st, &s, &id).await? else {
            return users_page(
                &st,
                &headers,
                &s,
                StatusCode::NOT_FOUND,
                None,
                Some(n_("Password reset link not found.")),
            )
            .await;
        };
        st.backend().revoke_invitation(&s.token, &inv.id).await?;
        tracing::info!(admin = %s.username, user = %inv.username, invite = %inv.id, "password reset link deleted");
        Ok(done(&user_path(&inv.username), "reset-revoked"))
    }
    .await;
    st.done(&headers, r)
}

fn debug_json(d: &api::UserDebugInfo) -> Value {
    let user = d.user.as_ref().map(|u| {
        json!({
            "username": u.username,
            "jid": u.jid,
            "display_name": u.display_name,
            "role": role_key(u.role),
            "state": state_key(u.state),
            "avatar_hash": u.avatar_hash,
            "last_active_at": u.last_active_at,
            "created_at": u.created_at,
            "deletion_requested_at": u.deletion_requested_at,
            "pending_until": u.pending_until,
            "circles": u.circles,
        })
    });
    let sessions: Vec<_> = d
        .sessions
        .iter()
        .map(|x| {
            json!({
                "full_jid": x.full_jid,
                "ip": x.ip,
                "since": x.since,
                "connected": x.connected,
                "active": x.active,
                "features": x.features,
                "held_stanzas": x.held_stanzas,
                "awaiting_acks": x.awaiting_acks,
            })
        })
        .collect();
    let push: Vec<_> = d
        .push_registrations
        .iter()
        .map(|p| {
            json!({
                "id": p.id,
                "since": p.since,
                "service": p.service,
                "node": p.node,
                "error_count": p.error_count,
                "client_id": p.client_id,
                "encrypted": p.encrypted,
            })
        })
        .collect();
    let omemo = d.omemo.as_ref().map(|o| {
        json!({
            "valid": o.valid,
            "devices": o.devices.iter().map(|dev| json!({
                "id": dev.id,
                "have_bundle": dev.have_bundle,
                "valid": dev.valid,
            })).collect::<Vec<_>>(),
        })
    });
    json!({
        "time": d.time,
        "user": user,
        "sessions": sessions,
        "push_registrations": push,
        "omemo": omemo,
    })
}

async fn user_debug(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(localpart): Path<String>,
) -> Response {
    let r = async {
        let s = admin_and_user(&st, &headers, &localpart)?;
        let d = match st.backend().user_debug_info(&s.token, &localpart).await {
            Ok(d) => d,
            Err(e) => return user_failure(&st, &headers, &s, &localpart, e.into()).await,
        };
        let dump = serde_json::to_string_pretty(&debug_json(&d)).unwrap_or_default();
        let sessions: Vec<_> = d
            .sessions
            .iter()
            .map(|x| {
                json!({
                    "full_jid": x.full_jid,
                    "ip": x.ip,
                    "since": web::date(x.since),
                    "state": if x.connected { "connected" } else { "hibernating" },
                    "active": x.active,
                    "features": x.features.join(", "),
                })
            })
            .collect();
        let ctx = st.ctx(&headers);
        Ok(st.render(
            &ctx,
            StatusCode::OK,
            "admin_user_debug.html",
            json!({
                "username": localpart,
                "path": pct_encode(&localpart),
                "time": web::date(d.time),
                "sessions": sessions,
                "push_count": d.push_registrations.len(),
                "omemo_devices": d.omemo.as_ref().map_or(0, |o| o.devices.len()),
                "dump": dump,
            }),
        ))
    }
    .await;
    st.done(&headers, r)
}

// ---------------------------------------------------------------------------------------------
// Circles

async fn circles_page(
    st: &AppState,
    headers: &HeaderMap,
    s: &Session,
    status: StatusCode,
    notice: Option<&str>,
    error: Option<&str>,
    form_name: &str,
) -> Result<Response, Fail> {
    let mut list = st.backend().list_circles(&s.token).await?;
    list.sort_by_key(|c| c.name.to_lowercase());
    let tr = st.tr(headers);
    let circles: Vec<_> = list
        .iter()
        .map(|c| {
            json!({
                "id": c.id,
                "name": circle_name(&tr, c),
                "is_default": c.is_default,
                "members": c.members.len(),
                "chats": c.chats.len(),
            })
        })
        .collect();
    let ctx = st.ctx(headers);
    Ok(st.render(
        &ctx,
        status,
        "admin_circles.html",
        json!({
            "circles": circles,
            "form_name": form_name,
            "notice": notice,
            "error": error,
        }),
    ))
}

/// The edit page of circle `id`; an unknown circle gives the list with an error.
async fn circle_page(
    st: &AppState,
    headers: &HeaderMap,
    s: &Session,
    id: &str,
    status: StatusCode,
    notice: Option<&str>,
    error: Option<&str>,
) -> Result<Response, Fail> {
    let c = match st
        .backend()
        .get_circle(&s.token, id)
        .await
        .map_err(Fail::from)
    {
        Ok(c) => c,
        Err(Fail::Refused(r)) if r == "group-not-found" => {
            return no_such_circle(st, headers, s).await
        }
        Err(e) => return Err(e),
    };
    let users = st.backend().list_users(&s.token).await?;
    let members: Vec<_> = c
        .members
        .iter()
        .map(|m| {
            let u = users.iter().find(|u| &u.username == m);
            json!({
                "username": m,
                "path": pct_encode(m),
                "display_name": u.map(|u| u.display_name.clone()).unwrap_or_default(),
                "deleted": u.is_none(),
            })
        })
        .collect();
    let candidates: Vec<_> = users
        .iter()
        .filter(|u| !c.members.contains(&u.username))
        .map(|u| json!({"username": u.username, "display_name": u.display_name}))
        .collect();
    let chats: Vec<_> = c
        .chats
        .iter()
        .map(|ch| json!({"id": ch.id, "jid": ch.jid, "name": ch.name}))
        .collect();
    let ctx = st.ctx(headers);
    Ok(st.render(
        &ctx,
        status,
        "admin_circle.html",
        json!({
            "circle": {
                "id": c.id,
                "name": circle_name(&ctx.tr, &c),
                "raw_name": c.name,
                "is_default": c.is_default,
                "created": web::date(c.created_at),
            },
            "members": members,
            "candidates": candidates,
            "chats": chats,
            "notice": notice,
            "error": error,
        }),
    ))
}

async fn no_such_circle(st: &AppState, headers: &HeaderMap, s: &Session) -> Result<Response, Fail> {
    circles_page(
        st,
        headers,
        s,
        StatusCode::NOT_FOUND,
        None,
        Some(friendly("group-not-found")),
        "",
    )
    .await
}

/// A failed circle call: unknown circles go back to the list, refusals to the circle page.
async fn circle_failure(
    st: &AppState,
    headers: &HeaderMap,
    s: &Session,
    id: &str,
    f: Fail,
) -> Result<Response, Fail> {
    match f {
        Fail::Refused(r) if r == "group-not-found" => no_such_circle(st, headers, s).await,
        Fail::Refused(r) => {
            circle_page(
                st,
                headers,
                s,
                id,
                StatusCode::BAD_REQUEST,
                None,
                Some(friendly(&r)),
            )
            .await
        }
        // The only not-found of the Circles service besides the circle: the account.
        Fail::NotFound => {
            circle_page(
                st,
                headers,
                s,
                id,
                StatusCode::BAD_REQUEST,
                None,
                Some(friendly("user-not-found")),
            )
            .await
        }
        other => Err(other),
    }
}

fn circle_path(id: &str) -> String {
    format!("/admin/circle/{id}/")
}

/// The admin session and a valid circle id, or the failure.
fn admin_and_circle(st: &AppState, headers: &HeaderMap, id: &str) -> Result<Session, Fail> {
    let s = require_admin(st, headers)?;
    if valid_id(id) {
        Ok(s)
    } else {
        Err(Fail::NotFound)
    }
}

async fn circles(State(st): State<AppState>, headers: HeaderMap, uri: Uri) -> Response {
    let r = async {
        let s = require_admin(&st, &headers)?;
        circles_page(&st, &headers, &s, StatusCode::OK, notice(&uri), None, "").await
    }
    .await;
    st.done(&headers, r)
}

#[derive(Deserialize)]
struct NameForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
}

async fn create_circle(
    State(st): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<NameForm>,
) -> Response {
    let r = async {
        let s = require_admin(&st, &headers)?;
        st.check_csrf(&headers, &form.csrf)?;
        let name = form.name.trim();
        let refused = |reason: &str| {
            circles_page(
                &st,
                &headers,
                &s,
                StatusCode::BAD_REQUEST,
                None,
                Some(friendly(reason)),
                name,
            )
        };
        if name.is_empty() {
            return refused("group-name-required").await;
        }
        match st
            .backend()
            .create_circle(&s.token, name)
            .await
            .map_err(Fail::from)
        {
            Ok(c) => {
                tracing::info!(admin = %s.username, circle = %c.id, "circle created");
                Ok(done(&circle_path(&c.id), "created"))
            }
            Err(Fail::Refused(reason)) => refused(&reason).await,
            Err(e) => Err(e),
        }
    }
    .await;
    st.done(&headers, r)
}

async fn circle_slash(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let r = admin_and_circle(&st, &headers, &id)
        .map(|_| Redirect::permanent(&circle_path(&id)).into_response());
    st.done(&headers, r)
}

async fn circle(
    State(st): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
    Path(id): Path<String>,
) -> Response {
    let r = async {
        let s = admin_and_circle(&st, &headers, &id)?;
        circle_page(&st, &headers, &s, &id, StatusCode::OK, notice(&uri), None).await
    }
    .await;
    st.done(&headers, r)
}

async fn rename_circle(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<NameForm>,
) -> Response {
    let r = async {
        let s = admin_and_circle(&st, &headers, &id)?;
        st.check_csrf(&headers, &form.csrf)?;
        let name = form.name.trim();
        if name.is_empty() {
            return circle_failure(
                &st,
                &headers,
                &s,
                &id,
                Fail::Refused("group-name-required".into()),
            )
            .await;
        }
        match st.backend().rename_circle(&s.token, &id, name).await {
            Ok(_) => {
                tracing::info!(admin = %s.username, circle = %id, "circle renamed");
                Ok(done(&circle_path(&id), "renamed"))
            }
            Err(e) => circle_failure(&st, &headers, &s, &id, e.into()).await,
        }
    }
    .await;
    st.done(&headers, r)
}

async fn delete_circle_page(
    st: &AppState,
    headers: &HeaderMap,
    s: &Session,
    id: &str,
    status: StatusCode,
    error: Option<&str>,
) -> Result<Response, Fail> {
    let c = match st.backend().get_circle(&s.token, id).await {
        Ok(c) => c,
        Err(e) => return circle_failure(st, headers, s, id, e.into()).await,
    };
    let ctx = st.ctx(headers);
    Ok(st.render(
        &ctx,
        status,
        "admin_circle_delete.html",
        json!({
            "circle": {
                "id": c.id,
                "name": circle_name(&ctx.tr, &c),
                "is_default": c.is_default,
                "members": c.members.len(),
                "chats": c.chats.len(),
            },
            "error": error,
        }),
    ))
}

async fn delete_circle_form(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let r = async {
        let s = admin_and_circle(&st, &headers, &id)?;
        delete_circle_page(&st, &headers, &s, &id, StatusCode::OK, None).await
    }
    .await;
    st.done(&headers, r)
}

async fn delete_circle(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<CsrfOnly>,
) -> Response {
    let r = async {
        let s = admin_and_circle(&st, &headers, &id)?;
        st.check_csrf(&headers, &form.csrf)?;
        match st
            .backend()
            .delete_circle(&s.token, &id)
            .await
            .map_err(Fail::from)
        {
            Ok(()) => {
                tracing::info!(admin = %s.username, circle = %id, "circle deleted");
                Ok(done("/admin/circles", "deleted-circle"))
            }
            Err(Fail::Refused(r)) if r != "group-not-found" => {
                delete_circle_page(
                    &st,
                    &headers,
                    &s,
                    &id,
                    StatusCode::BAD_REQUEST,
                    Some(friendly(&r)),
                )
                .await
            }
            Err(e) => circle_failure(&st, &headers, &s, &id, e).await,
        }
    }
    .await;
    st.done(&headers, r)
}

#[derive(Deserialize)]
struct MemberForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    username: String,
}

async fn member_action(
    st: AppState,
    headers: HeaderMap,
    id: String,
    form: MemberForm,
    add: bool,
) -> Response {
    let r = async {
        let s = admin_and_circle(&st, &headers, &id)?;
        st.check_csrf(&headers, &form.csrf)?;
        let username = form.username.trim();
        if !valid_localpart(username) {
            return circle_page(
                &st,
                &headers,
                &s,
                &id,
                StatusCode::BAD_REQUEST,
                None,
                Some(n_("Please choose a user.")),
            )
            .await;
        }
        let b = st.backend();
        let result = if add {
            b.add_circle_member(&s.token, &id, username).await
        } else {
            b.remove_circle_member(&s.token, &id, username).await
        };
        match result {
            Ok(_) => {
                tracing::info!(admin = %s.username, circle = %id, user = %username, add, "circle membership changed");
                let code = if add { "member-added" } else { "member-removed" };
                Ok(Redirect::to(&format!("{}?done={code}#members", circle_path(&id))).into_response())
            }
            Err(e) => circle_failure(&st, &headers, &s, &id, e.into()).await,
        }
    }
    .await;
    st.done(&headers, r)
}

async fn add_member(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<MemberForm>,
) -> Response {
    member_action(st, headers, id, form, true).await
}

async fn remove_member(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<MemberForm>,
) -> Response {
    member_action(st, headers, id, form, false).await
}

async fn add_chat_page(
    st: &AppState,
    headers: &HeaderMap,
    s: &Session,
    id: &str,
    status: StatusCode,
    error: Option<&str>,
    form_name: &str,
) -> Result<Response, Fail> {
    let c = match st.backend().get_circle(&s.token, id).await {
        Ok(c) => c,
        Err(e) => return circle_failure(st, headers, s, id, e.into()).await,
    };
    let ctx = st.ctx(headers);
    Ok(st.render(
        &ctx,
        status,
        "admin_circle_add_chat.html",
        json!({
            "circle": {"id": c.id, "name": circle_name(&ctx.tr, &c)},
            "form_name": form_name,
            "error": error,
        }),
    ))
}

async fn add_chat_form(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let r = async {
        let s = admin_and_circle(&st, &headers, &id)?;
        add_chat_page(&st, &headers, &s, &id, StatusCode::OK, None, "").await
    }
    .await;
    st.done(&headers, r)
}

async fn add_chat(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<NameForm>,
) -> Response {
    let r = async {
        let s = admin_and_circle(&st, &headers, &id)?;
        st.check_csrf(&headers, &form.csrf)?;
        let name = form.name.trim();
        if name.is_empty() {
            return add_chat_page(
                &st,
                &headers,
                &s,
                &id,
                StatusCode::BAD_REQUEST,
                Some(friendly("group-name-required")),
                name,
            )
            .await;
        }
        match st
            .backend()
            .add_circle_chat(&s.token, &id, name)
            .await
            .map_err(Fail::from)
        {
            Ok(chat) => {
                tracing::info!(admin = %s.username, circle = %id, chat = %chat.jid, "circle chat added");
                Ok(done(&circle_path(&id), "chat-added"))
            }
            Err(Fail::Refused(r)) if r != "group-not-found" => {
                add_chat_page(
                    &st,
                    &headers,
                    &s,
                    &id,
                    StatusCode::BAD_REQUEST,
                    Some(friendly(&r)),
                    name,
                )
                .await
            }
            Err(e) => circle_failure(&st, &headers, &s, &id, e).await,
        }
    }
    .await;
    st.done(&headers, r)
}

#[derive(Deserialize)]
struct ChatForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    chat_id: String,
}

async fn remove_chat(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<ChatForm>,
) -> Response {
    let r = async {
        let s = admin_and_circle(&st, &headers, &id)?;
        st.check_csrf(&headers, &form.csrf)?;
        let chat_id = form.chat_id.trim();
        if chat_id.is_empty() || chat_id.len() > 1023 {
            return circle_failure(&st, &headers, &s, &id, Fail::Refused("chat-not-found".into())).await;
        }
        match st.backend().remove_circle_chat(&s.token, &id, chat_id).await {
            Ok(_) => {
                tracing::info!(admin = %s.username, circle = %id, chat = %chat_id, "circle chat removed");
                Ok(done(&circle_path(&id), "chat-removed"))
            }
            Err(e) => circle_failure(&st, &headers, &s, &id, e.into()).await,
        }
    }
    .await;
    st.done(&headers, r)
}

// ---------------------------------------------------------------------------------------------
// System

async fn system(State(st): State<AppState>, headers: HeaderMap, uri: Uri) -> Response {
    let r = async {
        let s = require_admin(&st, &headers)?;
        system_page(
            &st,
            &headers,
            &s,
            StatusCode::OK,
            notice(&uri).map(|n| ("notice", n)),
        )
        .await
    }
    .await;
    st.done(&headers, r)
}

#[derive(Deserialize)]
struct AnnounceForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    text: String,
    #[serde(default)]
    online_only: Option<String>,
    #[serde(default)]
    action: String,
}

/// The figures of spec 5.5.6 (shown unless `SNIKKET_WEB_SHOW_METRICS` is off): the host's load
/// and memory, and memory and average CPU use of the portal and the server.
fn metrics(st: &AppState, info: &api::ServerInfo) -> serde_json::Value {
    use snikket_runtime::procstat;
    let portal = procstat::self_usage();
    let portal_uptime = (web::now() - st.started_at()).max(1) as f64;
    let host = procstat::host_memory();
    let snikket_rss = portal
        .map(|p| p.rss_bytes)
        .zip(info.memory_bytes)
        .map(|(a, b)| a.saturating_add(b));
    json!({
        "load": procstat::load_average_5m().map(|l| format!("{l:.2}")),
        "memory_used": host.and_then(|(total, avail)| {
            web::percent(total.saturating_sub(avail) as f64, total as f64)
        }),
        "memory_total": host.map(|(total, _)| web::bytes(total)),
        "snikket_share": host.zip(snikket_rss).and_then(|((total, _), rss)| {
            web::percent(rss as f64, total as f64)
        }),
        "portal_version": env!("CARGO_PKG_VERSION"),
        "portal_cpu": portal.and_then(|p| web::percent(p.cpu_seconds, portal_uptime)),
        "portal_memory": portal.map(|p| web::bytes(p.rss_bytes)),
        "server_cpu": info
            .cpu_seconds
            .and_then(|c| web::percent(c, info.uptime_seconds.max(1) as f64)),
        "server_memory": info.memory_bytes.map(web::bytes),
        "uploads": info.upload_bytes.map(web::bytes),
    })
}

/// The broadcast form (spec 5.5.6): a preview to the admin stays on the page, a post to
/// everyone (or everyone online) redirects with a notice.
async fn announce(
    State(st): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<AnnounceForm>,
) -> Response {
    let r = async {
        let s = require_admin(&st, &headers)?;
        st.check_csrf(&headers, &form.csrf)?;
        let preview = form.action == "preview";
        let to = match (preview, form.online_only.is_some()) {
            (true, _) => api::AnnouncementRecipients::Preview,
            (false, true) => api::AnnouncementRecipients::Online,
            (false, false) => api::AnnouncementRecipients::All,
        };
        match st.backend().announce(&s.token, &form.text, to).await {
            Ok(_) if preview => {
                let sent = Some(("notice", n_("Announcement sent!")));
                system_page(&st, &headers, &s, StatusCode::OK, sent).await
            }
            Ok(_) => Ok(done("/admin/system/", "announced")),
            Err(e) => match Fail::from(e) {
                Fail::Refused(reason) => {
                    let text = crate::backend::friendly(&reason);
                    system_page(
                        &st,
                        &headers,
                        &s,
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

async fn system_page(
    st: &AppState,
    headers: &HeaderMap,
    s: &Session,
    status: StatusCode,
    message: Option<(&str, &str)>,
) -> Result<Response, Fail> {
    let info = st.backend().server_info(&s.token).await?;
    let (certs, turn) = tokio::join!(st.backend().cert_status(), st.backend().turn_stats());
    let ctx = st.ctx(headers);
    let metrics = st.settings().show_metrics.then(|| metrics(st, &info));
    let certs = certs
        .map_err(|e| tracing::debug!(error = %e, "certificate manager status unavailable"))
        .ok()
        .map(|c| {
            json!({
                "names": c.names.join(", "),
                "expires": (c.not_after > 0).then(|| web::date(c.not_after)),
                "expires_in": (c.not_after > 0).then(|| web::relative(&ctx.tr, web::now(), c.not_after)),
                "next_attempt": (c.next_attempt > 0).then(|| web::relative(&ctx.tr, web::now(), c.next_attempt)),
                "last_error": c.last_error,
                "self_signed": c.self_signed,
                "acme": c.acme_enabled,
                "issuer": c.issuer,
            })
        });
    let turn = turn
        .map_err(|e| tracing::debug!(error = %e, "TURN status unavailable"))
        .ok()
        .map(|t| {
            json!({
                "allocations": t.allocations,
                "ports_in_use": t.ports_in_use,
                "ports": u64::from(t.port_max.saturating_sub(t.port_min)) + 1,
                "calls_supported": t.calls_supported,
                "relayed": web::bytes(t.bytes_to_peers.saturating_add(t.bytes_from_peers)),
                "capacity_exhausted": t.capacity_exhausted,
                "auth_failures": t.auth_failures,
            })
        });
    let data = json!({"metrics": metrics, "certs": certs, "turn": turn, "info": {
        "version": info.version,
        "site_name": info.site_name,
        "domain": info.domain,
        "started": web::date(info.started_at),
        "started_iso": web::iso(info.started_at),
        "uptime": web::duration(&ctx.tr, info.uptime_seconds),
        "users_total": info.users_total,
        "active_1d": info.active_1d,
        "active_7d": info.active_7d,
        "active_30d": info.active_30d,
        "connected_now": info.connected_now,
    }});
    let data = web::with_message(data, message);
    Ok(st.render(&ctx, status, "admin_system.html", data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_only_for_known_codes() {
        let uri: Uri = "/admin/users?x=1&done=deleted-user"
            .parse()
            .unwrap_or_default();
        assert_eq!(notice(&uri), Some("User deleted."));
        let uri: Uri = "/admin/users?done=%3Cscript%3E".parse().unwrap_or_default();
        assert_eq!(notice(&uri), None);
        let uri: Uri = "/admin/users".parse().unwrap_or_default();
        assert_eq!(notice(&uri), None);
    }

    #[test]
    fn localparts() {
        assert!(valid_localpart("alice"));
        assert!(valid_localpart("a.b-c_d+e"));
        assert!(!valid_localpart(""));
        assert!(!valid_localpart("a/b"));
        assert!(!valid_localpart("a@b"));
        assert!(!valid_localpart("a b"));
        assert!(!valid_localpart(&"x".repeat(1024)));
    }
}
