//! End to end over loopback: the real `snikket-server` and `snikket-portal` binaries and a plain
//! HTTP client. An admin (registered through a command-line admin invitation) logs in, creates an
//! invitation; a new user opens it, registers through the web form and logs in. Then the admin
//! manages that user (role, reset link, lock, delete), a circle (members, chat) and reads the
//! system page.
//!
//! The server binary must be built first: `cargo build -p snikket-server` (see `common/stack.rs`).

#[path = "common/stack.rs"]
mod stack;

use reqwest::redirect::Policy;
use reqwest::StatusCode;
use snikket_testkit::net::free_port;
use stack::{env, invite_token, Stack, DOMAIN, PORTAL};
use std::process::Command;
use std::time::Duration;

/// A tiny cookie jar over a client that does not follow redirects.
struct Browser {
    http: reqwest::Client,
    base: String,
    cookies: Vec<(String, String)>,
}

struct Page {
    status: StatusCode,
    location: String,
    body: String,
}

impl Browser {
    fn header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn finish(&mut self, resp: reqwest::Response) -> Page {
        for v in resp.headers().get_all(reqwest::header::SET_COOKIE) {
            let Some((k, v)) = v
                .to_str()
                .ok()
                .and_then(|s| s.split(';').next())
                .and_then(|kv| kv.split_once('='))
            else {
                continue;
            };
            self.cookies.retain(|(name, _)| name != k);
            if !v.is_empty() {
                self.cookies.push((k.to_string(), v.to_string()));
            }
        }
        let status = resp.status();
        let location = resp
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let body = resp.text().await.expect("body");
        Page {
            status,
            location,
            body,
        }
    }

    async fn get(&mut self, path: &str) -> Page {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .header(reqwest::header::COOKIE, self.header())
            .send()
            .await
            .expect("GET");
        self.finish(resp).await
    }

    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .header(reqwest::header::COOKIE, self.header())
            .form(form)
            .send()
            .await
            .expect("POST");
        self.finish(resp).await
    }
}

fn csrf(body: &str) -> String {
    let marker = "name=\"csrf\" value=\"";
    let start = body.find(marker).expect("a csrf field") + marker.len();
    let end = body[start..].find('"').expect("closing quote") + start;
    body[start..end].to_string()
}

async fn register(b: &mut Browser, token: &str, user: &str, password: &str) {
    let form = b.get(&format!("/invite/{token}/register")).await;
    assert_eq!(form.status, StatusCode::OK, "{}", form.body);
    let c = csrf(&form.body);
    let done = b
        .post(
            &format!("/invite/{token}/register"),
            &[
                ("csrf", &c),
                ("localpart", user),
                ("password", password),
                ("password_confirm", password),
            ],
        )
        .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    assert_eq!(done.location, "/invite/success");
    let ok = b.get("/invite/success").await;
    assert!(ok.body.contains(&format!("{user}@{DOMAIN}")), "{}", ok.body);
}

/// Logs in from scratch (a signed-in visitor of `/login` is sent to the dashboard).
async fn login(b: &mut Browser, user: &str, password: &str) {
    b.cookies.clear();
    let form = b.get("/login").await;
    let c = csrf(&form.body);
    let r = b
        .post(
            "/login",
            &[("csrf", &c), ("user", user), ("password", password)],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "login: {}", r.body);
    assert_eq!(r.location, "/user/");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_invites_a_new_user_who_registers_on_the_web() {
    let stack = Stack::start();
    let admin_token = stack.admin_token.clone();

    let http = reqwest::Client::builder()
        .redirect(Policy::none())
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client");
    let base = stack.base.clone();
    let mut admin = Browser {
        http: http.clone(),
        base: base.clone(),
        cookies: Vec::new(),
    };
    assert_eq!(admin.get("/_health").await.body, "STATUS OK");
    // The image's HEALTHCHECK: quiet and successful while the portal serves.
    let out = stack
        .command(PORTAL)
        .arg("healthcheck")
        .output()
        .expect("run healthcheck");
    assert!(out.status.success(), "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");

    // The admin account comes from the command-line admin invitation.
    register(&mut admin, &admin_token, "root", "admin password 1").await;
    login(&mut admin, &format!("root@{DOMAIN}"), "admin password 1").await;
    let list = admin.get("/admin/invitations").await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.body);
    let created = admin
        .post(
            "/admin/invitation/-/new",
            &[
                ("csrf", &csrf(&list.body)),
                ("kind", "account"),
                ("ttl", "86400"),
                ("role", "normal"),
                ("circle", "default"),
                ("note", "for Carol"),
            ],
        )
        .await;
    assert_eq!(created.status, StatusCode::SEE_OTHER, "{}", created.body);
    let view = admin.get(&created.location).await;
    assert_eq!(view.status, StatusCode::OK, "{}", view.body);
    assert!(view.body.contains("<svg"));
    let token = invite_token(&view.body);
    assert_eq!(token.len(), 24, "token from {}", view.body);
    let listed = admin.get("/admin/invitations").await;
    assert!(listed.body.contains("for Carol"));
    assert!(listed.body.contains("in 1 day") || listed.body.contains("in 23 hours"));

    // A new visitor opens the link, registers and logs in.
    let mut carol = Browser {
        http,
        base,
        cookies: Vec::new(),
    };
    let landing = carol.get(&format!("/invite/{token}/")).await;
    assert_eq!(landing.status, StatusCode::OK, "{}", landing.body);
    assert!(landing.body.contains("root"));
    register(&mut carol, &token, "carol", "correct horse battery").await;
    carol.cookies.clear();
    login(&mut carol, "carol", "correct horse battery").await;
    let home = carol.get("/user/").await;
    assert_eq!(home.status, StatusCode::OK);
    assert!(home.body.contains(&format!("carol@{DOMAIN}")));
    assert_eq!(carol.get("/admin/").await.status, StatusCode::FORBIDDEN);
    // Her data export (XEP-0227): nothing yet (no contacts: nobody else is in her circle), then
    // the nickname she sets.
    let data_page = carol.get("/user/manage_data").await;
    assert_eq!(data_page.status, StatusCode::OK, "{}", data_page.body);
    let token_field = csrf(&data_page.body);
    let empty = carol
        .post("/user/manage_data", &[("csrf", &token_field)])
        .await;
    assert!(
        empty
            .body
            .contains("You currently have no account data to export."),
        "{}",
        empty.body
    );
    let profile = carol
        .post(
            "/user/profile",
            &[("csrf", &token_field), ("nickname", "Carol C")],
        )
        .await;
    assert_eq!(profile.status, StatusCode::SEE_OTHER, "{}", profile.body);
    let export = carol
        .post("/user/manage_data", &[("csrf", &token_field)])
        .await;
    assert_eq!(export.status, StatusCode::OK);
    assert!(
        export.body.contains("<server-data xmlns='urn:xmpp:pie:0'>")
            && export
                .body
                .contains("<nick xmlns='http://jabber.org/protocol/nick'>Carol C</nick>"),
        "{}",
        export.body
    );
    // The single-use invitation is gone.
    let used = carol.get(&format!("/invite/{token}/")).await;
    assert_eq!(used.status, StatusCode::NOT_FOUND);

    admin_panel(&mut admin, &mut carol).await;
}

/// The user, circle and system pages against the real server.
async fn admin_panel(admin: &mut Browser, carol: &mut Browser) {
    let users = admin.get("/admin/users").await;
    assert_eq!(users.status, StatusCode::OK, "{}", users.body);
    assert!(users.body.contains(&format!("carol@{DOMAIN}")));
    assert!(users.body.contains(&format!("root@{DOMAIN}")));
    let c = csrf(&users.body);

    // Role and display name.
    let saved = admin
        .post(
            "/admin/user/carol/",
            &[
                ("csrf", &c),
                ("display_name", "Carol C"),
                ("role", "limited"),
            ],
        )
        .await;
    assert_eq!(saved.status, StatusCode::SEE_OTHER, "{}", saved.body);
    assert_eq!(saved.location, "/admin/users?done=updated");
    let page = admin.get("/admin/user/carol/").await;
    assert!(
        page.body.contains("value=\"limited\" checked"),
        "{}",
        page.body
    );
    assert!(page.body.contains("value=\"Carol C\""));
    // The server keeps the only administrator.
    let demote = admin
        .post(
            "/admin/user/root/",
            &[("csrf", &c), ("display_name", ""), ("role", "normal")],
        )
        .await;
    assert_eq!(demote.status, StatusCode::BAD_REQUEST);
    assert!(demote.body.contains("without an administrator"));

    // Password reset link.
    let reset = admin.post("/admin/user/carol/reset", &[("csrf", &c)]).await;
    assert_eq!(reset.status, StatusCode::SEE_OTHER, "{}", reset.body);
    assert!(reset.location.starts_with("/admin/users/password-reset/"));
    let link = admin.get(&reset.location).await;
    assert_eq!(link.status, StatusCode::OK, "{}", link.body);
    let reset_token = invite_token(&link.body);
    assert_eq!(reset_token.len(), 24, "{}", link.body);
    let landing = carol.get(&format!("/invite/{reset_token}/")).await;
    assert_eq!(landing.location, format!("/invite/{reset_token}/reset"));

    // Locking ends the user's portal session; unlocking lets them back in.
    let locked = admin.post("/admin/user/carol/lock", &[("csrf", &c)]).await;
    assert_eq!(locked.location, "/admin/user/carol/?done=locked");
    assert_eq!(carol.get("/user/").await.location, "/login");
    let unlocked = admin
        .post("/admin/user/carol/unlock", &[("csrf", &c)])
        .await;
    assert_eq!(unlocked.location, "/admin/users?done=unlocked");
    carol.cookies.clear();
    login(carol, "carol", "correct horse battery").await;
    let debug = admin.get("/admin/user/carol/debug").await;
    assert_eq!(debug.status, StatusCode::OK, "{}", debug.body);

    // Circles.
    let created = admin
        .post(
            "/admin/circle/-/new",
            &[("csrf", &c), ("name", "Book club")],
        )
        .await;
    assert_eq!(created.status, StatusCode::SEE_OTHER, "{}", created.body);
    let circle = created
        .location
        .split('?')
        .next()
        .unwrap_or_default()
        .to_string();
    assert!(circle.starts_with("/admin/circle/") && circle.ends_with('/'));
    let added = admin
        .post(
            &format!("{circle}members/add"),
            &[("csrf", &c), ("username", "carol")],
        )
        .await;
    assert_eq!(added.status, StatusCode::SEE_OTHER, "{}", added.body);
    let chat = admin
        .post(
            &format!("{circle}add_chat"),
            &[("csrf", &c), ("name", "Book talk")],
        )
        .await;
    assert_eq!(chat.status, StatusCode::SEE_OTHER, "{}", chat.body);
    let page = admin.get(&circle).await;
    assert!(page.body.contains("<td>Book talk</td>"), "{}", page.body);
    assert!(page.body.contains("href=\"/admin/user/carol/\""));
    let list = admin.get("/admin/circles").await;
    assert!(
        list.body
            .contains("<td>Book club</td>\n      <td data-label=\"Members\">1</td>\n      <td data-label=\"Group chats\">1</td>"),
        "{}",
        list.body
    );
    let protected = admin
        .post(
            "/admin/circle/default/rename",
            &[("csrf", &c), ("name", "Renamed")],
        )
        .await;
    assert_eq!(protected.status, StatusCode::BAD_REQUEST);
    assert!(protected.body.contains("cannot be renamed"));
    let deleted = admin
        .post(&format!("{circle}delete"), &[("csrf", &c)])
        .await;
    assert_eq!(deleted.location, "/admin/circles?done=deleted-circle");
    assert!(!admin.get("/admin/circles").await.body.contains("Book club"));

    // System.
    let system = admin.get("/admin/system").await;
    assert_eq!(system.status, StatusCode::OK, "{}", system.body);
    assert!(
        system.body.contains("<tr><th>Accounts</th><td>2</td></tr>"),
        "{}",
        system.body
    );

    // Delete the user.
    let gone = admin
        .post("/admin/user/carol/delete", &[("csrf", &c)])
        .await;
    assert_eq!(gone.location, "/admin/users?done=deleted-user");
    let users = admin.get(&gone.location).await;
    assert!(!users.body.contains(&format!("carol@{DOMAIN}")));
    assert!(users.body.contains("User deleted."));
}

#[test]
fn healthcheck_fails_without_a_portal() {
    let dir = snikket_testkit::temp_dir();
    let port = free_port();
    let mut cmd = Command::new(PORTAL);
    env(&mut cmd, dir.path(), free_port(), port);
    let out = cmd.arg("healthcheck").output().expect("run healthcheck");
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("portal not answering"), "{text}");
    assert!(text.contains(&port.to_string()), "{text}");
}
