//! Handler tests: the portal's router in-process against a fake admin gRPC backend on 127.0.0.1.

use axum::body::Body;
use http::{header, Request, StatusCode};
use http_body_util::BodyExt;
use snikket_portal::session::{Session, Signer, SESSION_COOKIE};
use snikket_portal::{AppState, Backend, Settings};
use snikket_rpc::snikket::admin::v1 as api;
use snikket_rpc::tonic::{self, Response, Status};
use std::sync::{Arc, Mutex};
use tower::ServiceExt;

const SECRET: &str = "test-secret";
const KEY: &[u8] = b"cookie-key-for-tests";

#[derive(Clone, Default)]
struct Fake {
    logouts: Arc<Mutex<Vec<String>>>,
    revoked: Arc<Mutex<Vec<String>>>,
}

fn refuse(code: tonic::Code, reason: &'static str) -> Status {
    let mut s = Status::new(code, format!("{reason}: refused by the fake"));
    s.metadata_mut().insert(
        "x-snikket-reason",
        tonic::metadata::MetadataValue::from_static(reason),
    );
    s
}

fn session<T>(req: &tonic::Request<T>) -> Result<&'static str, Status> {
    match req
        .metadata()
        .get("x-snikket-session")
        .and_then(|v| v.to_str().ok())
    {
        Some("tok-alice") => Ok("alice"),
        Some("tok-bob") => Ok("bob"),
        Some("tok-carol") => Ok("carol"),
        _ => Err(refuse(tonic::Code::Unauthenticated, "session-invalid")),
    }
}

fn admin<T>(req: &tonic::Request<T>) -> Result<(), Status> {
    match session(req)? {
        "alice" => Ok(()),
        _ => Err(refuse(tonic::Code::PermissionDenied, "permission-denied")),
    }
}

fn invitation() -> api::Invitation {
    api::Invitation {
        token: "abcd1234efgh5678ijkl9012".into(),
        id: "abcd1234".into(),
        kind: api::InvitationKind::Account as i32,
        reusable: false,
        role: api::Role::Normal as i32,
        note: "for Carol".into(),
        inviter: "alice".into(),
        circles: vec!["default".into()],
        created_at: 0,
        expires_at: time::OffsetDateTime::now_utc().unix_timestamp() + 6 * 86400 + 600,
        landing_url: "https://example.org/invite/abcd1234efgh5678ijkl9012/".into(),
        xmpp_uri: "xmpp:example.org?register;preauth=abcd1234efgh5678ijkl9012".into(),
        ..Default::default()
    }
}

#[tonic::async_trait]
impl api::auth_server::Auth for Fake {
    async fn login(
        &self,
        req: tonic::Request<api::LoginRequest>,
    ) -> Result<Response<api::LoginResponse>, Status> {
        let r = req.into_inner();
        let (token, role) = match (r.username.as_str(), r.password.as_str()) {
            ("alice", "alice password") => ("tok-alice", api::Role::Admin),
            ("bob", "bob password") => ("tok-bob", api::Role::Normal),
            ("carol", "carol password") => ("tok-carol", api::Role::Normal),
            _ => return Err(refuse(tonic::Code::Unauthenticated, "invalid-credentials")),
        };
        Ok(Response::new(api::LoginResponse {
            session_token: token.into(),
            username: r.username.clone(),
            jid: format!("{}@example.org", r.username),
            role: role as i32,
            scopes: vec![],
            expires_at: time::OffsetDateTime::now_utc().unix_timestamp() + 86400,
        }))
    }

    async fn logout(
        &self,
        req: tonic::Request<api::LogoutRequest>,
    ) -> Result<Response<api::LogoutResponse>, Status> {
        let who = session(&req)?;
        self.logouts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(who.to_string());
        Ok(Response::new(api::LogoutResponse {}))
    }
}

#[tonic::async_trait]
impl api::profile_server::Profile for Fake {
    async fn get_profile(
        &self,
        req: tonic::Request<api::GetProfileRequest>,
    ) -> Result<Response<api::User>, Status> {
        let who = session(&req)?;
        Ok(Response::new(api::User {
            username: who.into(),
            jid: format!("{who}@example.org"),
            ..Default::default()
        }))
    }

    async fn set_display_name(
        &self,
        _req: tonic::Request<api::SetDisplayNameRequest>,
    ) -> Result<Response<api::User>, Status> {
        Err(Status::unimplemented("not in the fake"))
    }

    async fn change_password(
        &self,
        req: tonic::Request<api::ChangePasswordRequest>,
    ) -> Result<Response<api::ChangePasswordResponse>, Status> {
        session(&req)?;
        if req.get_ref().old_password != "alice password" {
            return Err(refuse(tonic::Code::PermissionDenied, "wrong-password"));
        }
        Ok(Response::new(api::ChangePasswordResponse {}))
    }
}

#[tonic::async_trait]
impl api::invitations_server::Invitations for Fake {
    async fn create_invitation(
        &self,
        req: tonic::Request<api::CreateInvitationRequest>,
    ) -> Result<Response<api::Invitation>, Status> {
        admin(&req)?;
        let r = req.into_inner();
        if r.ttl_seconds != 3600 {
            return Err(refuse(tonic::Code::InvalidArgument, "invalid-argument"));
        }
        Ok(Response::new(invitation()))
    }

    async fn list_invitations(
        &self,
        req: tonic::Request<api::ListInvitationsRequest>,
    ) -> Result<Response<api::ListInvitationsResponse>, Status> {
        admin(&req)?;
        Ok(Response::new(api::ListInvitationsResponse {
            invitations: vec![invitation()],
        }))
    }

    async fn get_invitation(
        &self,
        req: tonic::Request<api::GetInvitationRequest>,
    ) -> Result<Response<api::Invitation>, Status> {
        admin(&req)?;
        if req.get_ref().id == "abcd1234" {
            Ok(Response::new(invitation()))
        } else {
            Err(refuse(tonic::Code::NotFound, "invite-not-found"))
        }
    }

    async fn revoke_invitation(
        &self,
        req: tonic::Request<api::RevokeInvitationRequest>,
    ) -> Result<Response<api::RevokeInvitationResponse>, Status> {
        admin(&req)?;
        let id = req.into_inner().id;
        if id != "abcd1234" {
            return Err(refuse(tonic::Code::NotFound, "invite-not-found"));
        }
        self.revoked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(id);
        Ok(Response::new(api::RevokeInvitationResponse {}))
    }
}

#[tonic::async_trait]
impl api::circles_server::Circles for Fake {
    async fn list_circles(
        &self,
        req: tonic::Request<api::ListCirclesRequest>,
    ) -> Result<Response<api::ListCirclesResponse>, Status> {
        admin(&req)?;
        Ok(Response::new(api::ListCirclesResponse {
            circles: vec![api::Circle {
                id: "default".into(),
                name: "The Family".into(),
                is_default: true,
                ..Default::default()
            }],
        }))
    }

    async fn create_circle(
        &self,
        _req: tonic::Request<api::CreateCircleRequest>,
    ) -> Result<Response<api::Circle>, Status> {
        Err(Status::unimplemented("not in the fake"))
    }

    async fn get_circle(
        &self,
        _req: tonic::Request<api::GetCircleRequest>,
    ) -> Result<Response<api::Circle>, Status> {
        Err(Status::unimplemented("not in the fake"))
    }

    async fn rename_circle(
        &self,
        _req: tonic::Request<api::RenameCircleRequest>,
    ) -> Result<Response<api::Circle>, Status> {
        Err(Status::unimplemented("not in the fake"))
    }

    async fn delete_circle(
        &self,
        _req: tonic::Request<api::DeleteCircleRequest>,
    ) -> Result<Response<api::DeleteCircleResponse>, Status> {
        Err(Status::unimplemented("not in the fake"))
    }

    async fn add_circle_member(
        &self,
        _req: tonic::Request<api::AddCircleMemberRequest>,
    ) -> Result<Response<api::Circle>, Status> {
        Err(Status::unimplemented("not in the fake"))
    }

    async fn remove_circle_member(
        &self,
        _req: tonic::Request<api::RemoveCircleMemberRequest>,
    ) -> Result<Response<api::Circle>, Status> {
        Err(Status::unimplemented("not in the fake"))
    }

    async fn add_circle_chat(
        &self,
        _req: tonic::Request<api::AddCircleChatRequest>,
    ) -> Result<Response<api::CircleChat>, Status> {
        Err(Status::unimplemented("not in the fake"))
    }

    async fn remove_circle_chat(
        &self,
        _req: tonic::Request<api::RemoveCircleChatRequest>,
    ) -> Result<Response<api::Circle>, Status> {
        Err(Status::unimplemented("not in the fake"))
    }
}

const TOKEN: &str = "abcd1234efgh5678ijkl9012";
const RESET_TOKEN: &str = "reset999efgh5678ijkl9012";

#[tonic::async_trait]
impl api::public_invites_server::PublicInvites for Fake {
    async fn get_invite(
        &self,
        req: tonic::Request<api::GetInviteRequest>,
    ) -> Result<Response<api::PublicInvite>, Status> {
        if req.get_ref().token == RESET_TOKEN {
            return Ok(Response::new(api::PublicInvite {
                site_name: "Test Chat".into(),
                kind: api::InvitationKind::PasswordReset as i32,
                reset: true,
                username: "bob".into(),
                domain: "example.org".into(),
                ..Default::default()
            }));
        }
        if req.get_ref().token != TOKEN {
            return Err(refuse(tonic::Code::NotFound, "invite-not-found"));
        }
        let i = invitation();
        Ok(Response::new(api::PublicInvite {
            site_name: "Test Chat".into(),
            inviter: "alice".into(),
            kind: i.kind,
            expires_at: i.expires_at,
            reset: false,
            username: String::new(),
            xmpp_uri: i.xmpp_uri,
            landing_url: i.landing_url,
            domain: "example.org".into(),
        }))
    }

    async fn register(
        &self,
        req: tonic::Request<api::RegisterRequest>,
    ) -> Result<Response<api::RegisterResponse>, Status> {
        let r = req.into_inner();
        if r.token == RESET_TOKEN && r.username == "bob" {
            if r.password.contains("bob") {
                return Err(refuse(
                    tonic::Code::InvalidArgument,
                    "password-contains-username",
                ));
            }
            return Ok(Response::new(api::RegisterResponse {
                jid: "bob@example.org".into(),
                username: r.username,
            }));
        }
        if r.token != TOKEN {
            return Err(refuse(tonic::Code::NotFound, "invite-not-found"));
        }
        if r.username == "taken" {
            return Err(refuse(tonic::Code::AlreadyExists, "username-taken"));
        }
        Ok(Response::new(api::RegisterResponse {
            jid: format!("{}@example.org", r.username),
            username: r.username,
        }))
    }
}

/// The fake on a free loopback port; returns its URI.
async fn start_fake(fake: Fake) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind fake");
    let addr = listener.local_addr().expect("fake addr");
    let check = snikket_rpc::SecretCheck::new(SECRET);
    let server = tonic::transport::Server::builder()
        .add_service(api::auth_server::AuthServer::with_interceptor(
            fake.clone(),
            check.clone(),
        ))
        .add_service(api::profile_server::ProfileServer::with_interceptor(
            fake.clone(),
            check.clone(),
        ))
        .add_service(
            api::public_invites_server::PublicInvitesServer::with_interceptor(
                fake.clone(),
                check.clone(),
            ),
        )
        .add_service(api::circles_server::CirclesServer::with_interceptor(
            fake.clone(),
            check.clone(),
        ))
        .add_service(api::invitations_server::InvitationsServer::with_interceptor(fake, check))
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
    tokio::spawn(server);
    format!("http://{addr}")
}

fn app(uri: &str) -> axum::Router {
    let settings = Settings {
        site_name: "Test Chat".into(),
        domain: "example.org".into(),
        cookie_key: KEY.to_vec(),
        apple_store_url: None,
    };
    let backend = Backend::new(uri, SECRET).expect("backend");
    snikket_portal::router(AppState::new(settings, backend))
}

struct Page {
    status: StatusCode,
    headers: http::HeaderMap,
    body: String,
}

impl Page {
    fn location(&self) -> &str {
        self.headers
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// `name=value` of each Set-Cookie, without attributes.
    fn cookies(&self) -> Vec<String> {
        self.headers
            .get_all(header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(|v| v.split(';').next())
            .map(str::to_string)
            .collect()
    }

    fn csrf(&self) -> String {
        let marker = "name=\"csrf\" value=\"";
        let start = self.body.find(marker).expect("form has a csrf field") + marker.len();
        let end = self.body[start..].find('"').expect("closing quote") + start;
        self.body[start..end].to_string()
    }
}

async fn call(app: &axum::Router, req: Request<Body>) -> Page {
    let resp = tokio::time::timeout(std::time::Duration::from_secs(20), app.clone().oneshot(req))
        .await
        .expect("handler answered in time")
        .expect("infallible");
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    Page {
        status,
        headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

async fn get(app: &axum::Router, path: &str, cookies: &[String]) -> Page {
    let req = Request::get(path)
        .header(header::COOKIE, cookies.join("; "))
        .body(Body::empty())
        .expect("request");
    call(app, req).await
}

async fn post(app: &axum::Router, path: &str, cookies: &[String], form: &[(&str, &str)]) -> Page {
    let body: String = form
        .iter()
        .map(|(k, v)| format!("{k}={}", urlencode(v)))
        .collect::<Vec<_>>()
        .join("&");
    let req = Request::post(path)
        .header(header::COOKIE, cookies.join("; "))
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(body))
        .expect("request");
    call(app, req).await
}

fn urlencode(s: &str) -> String {
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

/// Logs in through the form; returns the cookies (csrf + session) and the csrf token.
async fn login(app: &axum::Router, user: &str, password: &str) -> (Vec<String>, String) {
    let form = get(app, "/login", &[]).await;
    assert_eq!(form.status, StatusCode::OK);
    let mut cookies = form.cookies();
    let csrf = form.csrf();
    let r = post(
        app,
        "/login",
        &cookies,
        &[("csrf", &csrf), ("user", user), ("password", password)],
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "login failed: {}", r.body);
    assert_eq!(r.location(), "/user/");
    cookies.extend(r.cookies());
    (cookies, csrf)
}

#[tokio::test]
async fn health_and_security_headers() {
    let app = app("http://127.0.0.1:9");
    let p = get(&app, "/_health", &[]).await;
    assert_eq!(p.status, StatusCode::OK);
    assert_eq!(p.body, "STATUS OK");
    assert_eq!(p.headers[header::CONTENT_TYPE], "text/plain");
    let csp = p.headers[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .expect("ascii");
    assert!(csp.contains("frame-ancestors 'none'"));
    assert!(!csp.contains("unsafe-inline"));
    assert_eq!(p.headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    assert!(p.headers.contains_key(header::REFERRER_POLICY));
    let css = get(&app, "/static/style.css", &[]).await;
    assert_eq!(css.status, StatusCode::OK);
    assert!(css.body.contains("@media"));
    let js = get(&app, "/static/copy.js", &[]).await;
    assert_eq!(js.status, StatusCode::OK);
    assert!(js.body.contains("navigator.clipboard"));
}

#[tokio::test]
async fn login_dashboard_and_cookie_flags() {
    let app = app(&start_fake(Fake::default()).await);
    let form = get(&app, "/login", &[]).await;
    let set = form.headers[header::SET_COOKIE].to_str().expect("ascii");
    assert!(set.contains("Secure") && set.contains("HttpOnly") && set.contains("SameSite=Lax"));
    let (cookies, _) = login(&app, "alice@example.org", "alice password").await;
    assert!(cookies.iter().any(|c| c.starts_with("snikket_session=")));
    let d = get(&app, "/user/", &cookies).await;
    assert_eq!(d.status, StatusCode::OK, "{}", d.body);
    assert!(d.body.contains("alice@example.org"));
    assert!(d.body.contains("/admin/"));
    assert_eq!(get(&app, "/", &cookies).await.location(), "/user/");
    assert_eq!(get(&app, "/", &[]).await.location(), "/login");
    // Anonymous: redirect to the login page.
    let anon = get(&app, "/user/", &[]).await;
    assert_eq!(anon.status, StatusCode::SEE_OTHER);
    assert_eq!(anon.location(), "/login");
    // A forged session cookie is ignored.
    let forged = Signer::new(b"other key").sign(
        SESSION_COOKIE,
        &Session {
            token: "tok-alice".into(),
            username: "alice".into(),
            jid: "alice@example.org".into(),
            admin: true,
            expires_at: i64::MAX,
        },
    );
    let f = get(&app, "/admin/", &[format!("{SESSION_COOKIE}={forged}")]).await;
    assert_eq!(f.status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn login_errors_keep_input_need_csrf_and_are_throttled() {
    let app = app(&start_fake(Fake::default()).await);
    let form = get(&app, "/login", &[]).await;
    let cookies = form.cookies();
    let csrf = form.csrf();
    let no_csrf = post(
        &app,
        "/login",
        &cookies,
        &[("user", "alice"), ("password", "alice password")],
    )
    .await;
    assert_eq!(no_csrf.status, StatusCode::BAD_REQUEST);
    assert!(no_csrf
        .cookies()
        .iter()
        .all(|c| !c.starts_with("snikket_session=")));
    let other_domain = post(
        &app,
        "/login",
        &cookies,
        &[
            ("csrf", &csrf),
            ("user", "alice@evil.example"),
            ("password", "alice password"),
        ],
    )
    .await;
    assert_eq!(other_domain.status, StatusCode::UNAUTHORIZED);
    for _ in 0..4 {
        let bad = post(
            &app,
            "/login",
            &cookies,
            &[("csrf", &csrf), ("user", "alice"), ("password", "wrong")],
        )
        .await;
        assert_eq!(bad.status, StatusCode::UNAUTHORIZED);
        assert!(bad.body.contains("not correct"));
        assert!(bad.body.contains("value=\"alice\""));
        assert!(!bad.body.contains("wrong"));
    }
    let throttled = post(
        &app,
        "/login",
        &cookies,
        &[
            ("csrf", &csrf),
            ("user", "alice"),
            ("password", "alice password"),
        ],
    )
    .await;
    assert_eq!(throttled.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(throttled.body.contains("Too many attempts"));
}

#[tokio::test]
async fn logout_revokes_the_server_session() {
    let fake = Fake::default();
    let app = app(&start_fake(fake.clone()).await);
    let (cookies, csrf) = login(&app, "bob", "bob password").await;
    let r = post(&app, "/user/logout", &cookies, &[("csrf", &csrf)]).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert!(r.cookies().iter().any(|c| c == "snikket_session="));
    assert_eq!(
        fake.logouts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_slice(),
        ["bob".to_string()]
    );
}

#[tokio::test]
async fn change_password() {
    let app = app(&start_fake(Fake::default()).await);
    let (cookies, csrf) = login(&app, "alice", "alice password").await;
    let page = get(&app, "/user/passwd", &cookies).await;
    assert_eq!(page.status, StatusCode::OK);
    let mismatch = post(
        &app,
        "/user/passwd",
        &cookies,
        &[
            ("csrf", &csrf),
            ("old_password", "alice password"),
            ("new_password", "0123456789ab"),
            ("confirm", "0123456789ac"),
        ],
    )
    .await;
    assert_eq!(mismatch.status, StatusCode::BAD_REQUEST);
    assert!(mismatch.body.contains("do not match"));
    let wrong = post(
        &app,
        "/user/passwd",
        &cookies,
        &[
            ("csrf", &csrf),
            ("old_password", "nope"),
            ("new_password", "0123456789ab"),
            ("confirm", "0123456789ab"),
        ],
    )
    .await;
    assert_eq!(wrong.status, StatusCode::BAD_REQUEST);
    assert!(wrong.body.contains("current password is not correct"));
    let ok = post(
        &app,
        "/user/passwd",
        &cookies,
        &[
            ("csrf", &csrf),
            ("old_password", "alice password"),
            ("new_password", "0123456789ab"),
            ("confirm", "0123456789ab"),
        ],
    )
    .await;
    assert_eq!(ok.status, StatusCode::OK);
    assert!(ok.body.contains("has been changed"));
    let anon = get(&app, "/user/passwd", &[]).await;
    assert_eq!(anon.status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn admin_invitations() {
    let fake = Fake::default();
    let app = app(&start_fake(fake.clone()).await);
    // Anonymous → login; non-admin → 403.
    assert_eq!(
        get(&app, "/admin/invitations", &[]).await.location(),
        "/login"
    );
    let (bob, _) = login(&app, "bob", "bob password").await;
    assert_eq!(
        get(&app, "/admin/", &bob).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        get(&app, "/admin/invitations", &bob).await.status,
        StatusCode::FORBIDDEN
    );

    let (alice, csrf) = login(&app, "alice", "alice password").await;
    assert_eq!(get(&app, "/admin/", &alice).await.status, StatusCode::OK);
    let list = get(&app, "/admin/invitations", &alice).await;
    assert_eq!(list.status, StatusCode::OK);
    assert!(list.body.contains("Individual"));
    assert!(list.body.contains("expires in 6 days"));
    assert!(list.body.contains("/admin/invitation/abcd1234"));
    assert!(list.body.contains("Four weeks"));
    assert!(list.body.contains("<td>The Family</td>"));
    assert!(list
        .body
        .contains("<option value=\"default\" selected>The Family</option>"));

    let created = post(
        &app,
        "/admin/invitation/-/new",
        &alice,
        &[
            ("csrf", &csrf),
            ("kind", "account"),
            ("ttl", "3600"),
            ("role", "normal"),
            ("circle", "default"),
            ("note", "for Carol"),
        ],
    )
    .await;
    assert_eq!(created.status, StatusCode::SEE_OTHER, "{}", created.body);
    assert_eq!(created.location(), "/admin/invitation/abcd1234");
    // A lifetime the form does not offer keeps the input and explains.
    let bad = post(
        &app,
        "/admin/invitation/-/new",
        &alice,
        &[
            ("csrf", &csrf),
            ("kind", "group"),
            ("ttl", "99"),
            ("role", "admin"),
            ("note", "kept note"),
        ],
    )
    .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.body.contains("kept note"));
    // A server refusal is shown as friendly text.
    let refused = post(
        &app,
        "/admin/invitation/-/new",
        &alice,
        &[
            ("csrf", &csrf),
            ("kind", "account"),
            ("ttl", "86400"),
            ("role", "normal"),
            ("circle", "default"),
        ],
    )
    .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert!(refused.body.contains("not valid"));
    // A circle is required.
    let no_circle = post(
        &app,
        "/admin/invitation/-/new",
        &alice,
        &[
            ("csrf", &csrf),
            ("kind", "account"),
            ("ttl", "3600"),
            ("role", "normal"),
        ],
    )
    .await;
    assert_eq!(no_circle.status, StatusCode::BAD_REQUEST);
    assert!(no_circle
        .body
        .contains("At least one circle must be selected."));

    let view = get(&app, "/admin/invitation/abcd1234", &alice).await;
    assert_eq!(view.status, StatusCode::OK);
    assert!(
        view.body.contains("invite&#x2f;abcd1234efgh5678ijkl9012"),
        "{}",
        view.body
    );
    assert!(view.body.contains("<svg"));
    assert!(view.body.contains("data-copy=\"link\""));
    let missing = get(&app, "/admin/invitation/zzzz9999", &alice).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert!(missing.body.contains("No such invitation exists."));
    assert!(missing.body.contains("Test Chat"));
    assert_eq!(
        get(&app, "/admin/invitation/abcd1234", &bob).await.status,
        StatusCode::FORBIDDEN
    );

    let no_csrf = post(&app, "/admin/invitation/abcd1234/revoke", &alice, &[]).await;
    assert_eq!(no_csrf.status, StatusCode::BAD_REQUEST);
    let revoked = post(
        &app,
        "/admin/invitation/abcd1234/revoke",
        &alice,
        &[("csrf", &csrf)],
    )
    .await;
    assert_eq!(revoked.status, StatusCode::SEE_OTHER);
    assert_eq!(revoked.location(), "/admin/invitations");
    assert_eq!(
        fake.revoked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_slice(),
        ["abcd1234".to_string()]
    );
}

#[tokio::test]
async fn unreachable_server_gives_a_branded_503() {
    // A port with nothing listening.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let app = app(&format!("http://127.0.0.1:{port}"));
    let cookie = Signer::new(KEY).sign(
        SESSION_COOKIE,
        &Session {
            token: "tok-alice".into(),
            username: "alice".into(),
            jid: "alice@example.org".into(),
            admin: true,
            expires_at: i64::MAX,
        },
    );
    let p = get(&app, "/user/", &[format!("{SESSION_COOKIE}={cookie}")]).await;
    assert_eq!(p.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(p.body.contains("Test Chat"));
    assert!(p.body.contains("Error id"));
    assert!(!p.body.contains("tok-alice"));
}

#[tokio::test]
async fn unknown_pages_are_branded_404s() {
    let app = app("http://127.0.0.1:9");
    let p = get(&app, "/no/such/page", &[]).await;
    assert_eq!(p.status, StatusCode::NOT_FOUND);
    assert!(p.body.contains("Test Chat"));
}

#[tokio::test]
async fn invite_landing_page() {
    let app = app(&start_fake(Fake::default()).await);
    let p = get(&app, &format!("/invite/{TOKEN}/"), &[]).await;
    assert_eq!(p.status, StatusCode::OK, "{}", p.body);
    assert_eq!(
        p.headers[header::LINK],
        format!("<xmpp:example.org?register;preauth={TOKEN}>; rel=\"alternate\"").as_str()
    );
    assert_eq!(p.headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
    assert_eq!(p.headers[header::ACCESS_CONTROL_EXPOSE_HEADERS], "Link");
    assert!(p.body.contains("chat with <strong>alice</strong>"));
    assert!(p
        .body
        .contains("referrer=xmpp%3Aexample.org%3Fregister%3Bpreauth%3Dabcd1234efgh5678ijkl9012"));
    assert!(
        p.body.contains("market://details?id=org.snikket.android")
            || p.body.contains("market:&#x2f;&#x2f;details")
    );
    assert!(p.body.contains("<svg"));
    assert!(p.body.contains("rel=\"alternate\""));
    let gone = get(&app, "/invite/zzzzzzzzzzzzzzzzzzzzzzzz/", &[]).await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    assert!(gone.body.contains("Invite expired"));
    assert!(gone.body.contains("Test Chat"));
}

#[tokio::test]
async fn invite_registration() {
    let app = app(&start_fake(Fake::default()).await);
    let path = format!("/invite/{TOKEN}/register");
    let form = get(&app, &path, &[]).await;
    assert_eq!(form.status, StatusCode::OK);
    let cookies = form.cookies();
    let csrf = form.csrf();
    let mismatch = post(
        &app,
        &path,
        &cookies,
        &[
            ("csrf", &csrf),
            ("localpart", "carol"),
            ("password", "carol password"),
            ("password_confirm", "other password"),
        ],
    )
    .await;
    assert_eq!(mismatch.status, StatusCode::BAD_REQUEST);
    assert!(mismatch.body.contains("The passwords must match."));
    assert!(mismatch.body.contains("value=\"carol\""));
    let taken = post(
        &app,
        &path,
        &cookies,
        &[
            ("csrf", &csrf),
            ("localpart", "taken"),
            ("password", "carol password"),
            ("password_confirm", "carol password"),
        ],
    )
    .await;
    assert_eq!(taken.status, StatusCode::BAD_REQUEST);
    assert!(taken.body.contains("That username is already taken."));
    assert!(taken.body.contains("value=\"taken\""));
    let no_csrf = post(
        &app,
        &path,
        &cookies,
        &[
            ("localpart", "carol"),
            ("password", "carol password"),
            ("password_confirm", "carol password"),
        ],
    )
    .await;
    assert_eq!(no_csrf.status, StatusCode::BAD_REQUEST);
    let ok = post(
        &app,
        &path,
        &cookies,
        &[
            ("csrf", &csrf),
            ("localpart", "carol"),
            ("password", "carol password"),
            ("password_confirm", "carol password"),
        ],
    )
    .await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER, "{}", ok.body);
    assert_eq!(ok.location(), "/invite/success");
    let mut all = cookies.clone();
    all.extend(ok.cookies());
    let success = get(&app, "/invite/success", &all).await;
    assert_eq!(success.status, StatusCode::OK);
    assert!(success.body.contains("carol@example.org"));
    assert_eq!(get(&app, "/invite/success", &[]).await.location(), "/login");
    // An unknown invitation sends the visitor to its landing page (which says "expired").
    let gone = get(&app, "/invite/zzzzzzzzzzzzzzzzzzzzzzzz/register", &[]).await;
    assert_eq!(gone.status, StatusCode::SEE_OTHER);
    assert_eq!(gone.location(), "/invite/zzzzzzzzzzzzzzzzzzzzzzzz/");
}

#[tokio::test]
async fn password_reset_pages() {
    let app = app(&start_fake(Fake::default()).await);
    let landing = get(&app, &format!("/invite/{RESET_TOKEN}/"), &[]).await;
    assert_eq!(landing.location(), format!("/invite/{RESET_TOKEN}/reset"));
    let register = get(&app, &format!("/invite/{RESET_TOKEN}/register"), &[]).await;
    assert_eq!(register.location(), format!("/invite/{RESET_TOKEN}/reset"));
    let not_reset = get(&app, &format!("/invite/{TOKEN}/reset"), &[]).await;
    assert_eq!(not_reset.location(), format!("/invite/{TOKEN}/register"));
    let path = format!("/invite/{RESET_TOKEN}/reset");
    let form = get(&app, &path, &[]).await;
    assert_eq!(form.status, StatusCode::OK);
    assert!(form.body.contains("bob@example.org"));
    let cookies = form.cookies();
    let csrf = form.csrf();
    let policy = post(
        &app,
        &path,
        &cookies,
        &[
            ("csrf", &csrf),
            ("password", "bob is my name"),
            ("password_confirm", "bob is my name"),
        ],
    )
    .await;
    assert_eq!(policy.status, StatusCode::BAD_REQUEST);
    assert!(policy.body.contains("must not contain the username"));
    let ok = post(
        &app,
        &path,
        &cookies,
        &[
            ("csrf", &csrf),
            ("password", "a new secret 1"),
            ("password_confirm", "a new secret 1"),
        ],
    )
    .await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER, "{}", ok.body);
    assert_eq!(ok.location(), "/invite/success/reset");
    let done = get(&app, "/invite/success/reset", &[]).await;
    assert!(done.body.contains("Password reset successful"));
}
