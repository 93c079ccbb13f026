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
    /// Every admin-panel call of the Users, Circles and System services, as `method args…`.
    calls: Arc<Mutex<Vec<String>>>,
}

impl Fake {
    fn record(&self, call: String) {
        self.calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(call);
    }

    /// The recorded calls, leaving the list empty.
    fn take_calls(&self) -> Vec<String> {
        std::mem::take(&mut *self.calls.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// The recorded calls that change something (not the reads).
    fn take_changes(&self) -> Vec<String> {
        self.take_calls()
            .into_iter()
            .filter(|c| !["list_", "get_"].iter().any(|read| c.starts_with(read)))
            .collect()
    }
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
            display_name: if who == "carol" {
                "Carol <C>".into()
            } else {
                String::new()
            },
            ..Default::default()
        }))
    }

    async fn set_display_name(
        &self,
        req: tonic::Request<api::SetDisplayNameRequest>,
    ) -> Result<Response<api::User>, Status> {
        let who = session(&req)?;
        let name = req.into_inner().display_name;
        self.record(format!("set_display_name {who} {name}"));
        Ok(Response::new(api::User {
            username: who.into(),
            jid: format!("{who}@example.org"),
            display_name: name,
            ..Default::default()
        }))
    }

    async fn get_profile_details(
        &self,
        req: tonic::Request<api::GetProfileRequest>,
    ) -> Result<Response<api::ProfileDetails>, Status> {
        let who = session(&req)?;
        Ok(Response::new(api::ProfileDetails {
            nickname: if who == "carol" {
                "Carol <C>".into()
            } else {
                String::new()
            },
            access_model: "presence".into(),
            avatar_hash: if who == "carol" {
                "00112233445566778899aabbccddeeff00112233".into()
            } else {
                String::new()
            },
        }))
    }

    async fn update_profile(
        &self,
        req: tonic::Request<api::UpdateProfileRequest>,
    ) -> Result<Response<api::ProfileDetails>, Status> {
        let who = session(&req)?;
        let r = req.into_inner();
        if r.avatar.len() > 1024 * 1024 {
            return Err(refuse(tonic::Code::InvalidArgument, "avatar-too-big"));
        }
        self.record(format!(
            "update_profile {who} nickname={} access={} avatar={}:{}",
            r.nickname.unwrap_or_default(),
            r.access_model,
            r.avatar_type,
            String::from_utf8_lossy(&r.avatar)
        ));
        Ok(Response::new(api::ProfileDetails::default()))
    }

    async fn get_avatar(
        &self,
        req: tonic::Request<api::GetAvatarRequest>,
    ) -> Result<Response<api::Avatar>, Status> {
        session(&req)?;
        if req.get_ref().jid != "carol@example.org" {
            return Err(refuse(tonic::Code::NotFound, "not-found"));
        }
        Ok(Response::new(api::Avatar {
            mime_type: "image/png".into(),
            data: b"PNGDATA".to_vec(),
            sha1: "00112233445566778899aabbccddeeff00112233".into(),
        }))
    }

    async fn export_account_data(
        &self,
        req: tonic::Request<api::ExportAccountDataRequest>,
    ) -> Result<Response<api::AccountData>, Status> {
        let who = session(&req)?;
        let empty = who != "carol";
        Ok(Response::new(api::AccountData {
            empty,
            xml: if empty {
                Vec::new()
            } else {
                b"<server-data xmlns='urn:xmpp:pie:0'/>".to_vec()
            },
            jid: format!("{who}@example.org"),
        }))
    }

    async fn import_account_data(
        &self,
        req: tonic::Request<api::ImportAccountDataRequest>,
    ) -> Result<Response<api::ImportAccountDataResponse>, Status> {
        let who = session(&req)?;
        let xml = String::from_utf8_lossy(&req.get_ref().xml).into_owned();
        if !xml.contains("urn:xmpp:pie:0") {
            return Err(refuse(tonic::Code::InvalidArgument, "not-xep227"));
        }
        self.record(format!("import_account_data {who} {}", xml.len()));
        Ok(Response::new(api::ImportAccountDataResponse::default()))
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
        match req.get_ref().id.as_str() {
            "abcd1234" => Ok(Response::new(invitation())),
            "reset999" => Ok(Response::new(reset_invitation("bob"))),
            _ => Err(refuse(tonic::Code::NotFound, "invite-not-found")),
        }
    }

    async fn revoke_invitation(
        &self,
        req: tonic::Request<api::RevokeInvitationRequest>,
    ) -> Result<Response<api::RevokeInvitationResponse>, Status> {
        admin(&req)?;
        let id = req.into_inner().id;
        if id != "abcd1234" && id != "reset999" {
            return Err(refuse(tonic::Code::NotFound, "invite-not-found"));
        }
        self.revoked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(id);
        Ok(Response::new(api::RevokeInvitationResponse {}))
    }
}

fn circle(id: &str) -> Option<api::Circle> {
    match id {
        "default" => Some(api::Circle {
            id: "default".into(),
            name: "The Family".into(),
            is_default: true,
            members: vec!["alice".into(), "bob".into()],
            chats: vec![api::CircleChat {
                id: "familychat".into(),
                jid: "familychat@groups.example.org".into(),
                name: "Family chat".into(),
            }],
            created_at: 0,
        }),
        "frnds1234567" => Some(api::Circle {
            id: "frnds1234567".into(),
            name: "Friends <3".into(),
            is_default: false,
            members: vec!["bob".into(), "ghost".into()],
            chats: vec![],
            created_at: 0,
        }),
        _ => None,
    }
}

fn circle_or_refuse(id: &str) -> Result<api::Circle, Status> {
    circle(id).ok_or_else(|| refuse(tonic::Code::NotFound, "group-not-found"))
}

#[tonic::async_trait]
impl api::circles_server::Circles for Fake {
    async fn list_circles(
        &self,
        req: tonic::Request<api::ListCirclesRequest>,
    ) -> Result<Response<api::ListCirclesResponse>, Status> {
        admin(&req)?;
        self.record("list_circles".into());
        Ok(Response::new(api::ListCirclesResponse {
            circles: ["default", "frnds1234567"]
                .iter()
                .filter_map(|id| circle(id))
                .collect(),
        }))
    }

    async fn create_circle(
        &self,
        req: tonic::Request<api::CreateCircleRequest>,
    ) -> Result<Response<api::Circle>, Status> {
        admin(&req)?;
        let name = req.into_inner().name;
        self.record(format!("create_circle {name}"));
        if name == "refuse me" {
            return Err(refuse(tonic::Code::InvalidArgument, "group-name-required"));
        }
        Ok(Response::new(api::Circle {
            id: "new123456789".into(),
            name,
            ..Default::default()
        }))
    }

    async fn get_circle(
        &self,
        req: tonic::Request<api::GetCircleRequest>,
    ) -> Result<Response<api::Circle>, Status> {
        admin(&req)?;
        let id = req.into_inner().id;
        self.record(format!("get_circle {id}"));
        Ok(Response::new(circle_or_refuse(&id)?))
    }

    async fn rename_circle(
        &self,
        req: tonic::Request<api::RenameCircleRequest>,
    ) -> Result<Response<api::Circle>, Status> {
        admin(&req)?;
        let r = req.into_inner();
        self.record(format!("rename_circle {} {}", r.id, r.name));
        let mut c = circle_or_refuse(&r.id)?;
        if c.is_default {
            return Err(refuse(
                tonic::Code::FailedPrecondition,
                "default-circle-protected",
            ));
        }
        c.name = r.name;
        Ok(Response::new(c))
    }

    async fn delete_circle(
        &self,
        req: tonic::Request<api::DeleteCircleRequest>,
    ) -> Result<Response<api::DeleteCircleResponse>, Status> {
        admin(&req)?;
        let id = req.into_inner().id;
        self.record(format!("delete_circle {id}"));
        if circle_or_refuse(&id)?.is_default {
            return Err(refuse(
                tonic::Code::FailedPrecondition,
                "default-circle-protected",
            ));
        }
        Ok(Response::new(api::DeleteCircleResponse {}))
    }

    async fn add_circle_member(
        &self,
        req: tonic::Request<api::AddCircleMemberRequest>,
    ) -> Result<Response<api::Circle>, Status> {
        admin(&req)?;
        let r = req.into_inner();
        self.record(format!("add_circle_member {} {}", r.id, r.username));
        let mut c = circle_or_refuse(&r.id)?;
        if user(&r.username).is_none() {
            return Err(refuse(tonic::Code::NotFound, "user-not-found"));
        }
        c.members.push(r.username);
        Ok(Response::new(c))
    }

    async fn remove_circle_member(
        &self,
        req: tonic::Request<api::RemoveCircleMemberRequest>,
    ) -> Result<Response<api::Circle>, Status> {
        admin(&req)?;
        let r = req.into_inner();
        self.record(format!("remove_circle_member {} {}", r.id, r.username));
        let mut c = circle_or_refuse(&r.id)?;
        if !c.members.contains(&r.username) {
            return Err(refuse(tonic::Code::NotFound, "user-not-found"));
        }
        c.members.retain(|m| m != &r.username);
        Ok(Response::new(c))
    }

    async fn add_circle_chat(
        &self,
        req: tonic::Request<api::AddCircleChatRequest>,
    ) -> Result<Response<api::CircleChat>, Status> {
        admin(&req)?;
        let r = req.into_inner();
        self.record(format!("add_circle_chat {} {}", r.id, r.name));
        circle_or_refuse(&r.id)?;
        Ok(Response::new(api::CircleChat {
            id: "newchat".into(),
            jid: "newchat@groups.example.org".into(),
            name: r.name,
        }))
    }

    async fn remove_circle_chat(
        &self,
        req: tonic::Request<api::RemoveCircleChatRequest>,
    ) -> Result<Response<api::Circle>, Status> {
        admin(&req)?;
        let r = req.into_inner();
        self.record(format!("remove_circle_chat {} {}", r.id, r.chat_id));
        let mut c = circle_or_refuse(&r.id)?;
        if !c.chats.iter().any(|ch| ch.id == r.chat_id) {
            return Err(refuse(tonic::Code::NotFound, "chat-not-found"));
        }
        c.chats.retain(|ch| ch.id != r.chat_id);
        Ok(Response::new(c))
    }
}

/// The fake's accounts: alice (admin), bob (normal), carol (limited, locked), dave (pending
/// deletion).
fn user(name: &str) -> Option<api::User> {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let (display_name, role, state, circles) = match name {
        "alice" => (
            "Alice A.",
            api::Role::Admin,
            api::AccountState::Active,
            vec!["default".to_string()],
        ),
        "bob" => (
            "",
            api::Role::Normal,
            api::AccountState::Active,
            vec!["default".to_string(), "frnds1234567".to_string()],
        ),
        "carol" => (
            "Carol <C>",
            api::Role::Limited,
            api::AccountState::Locked,
            vec![],
        ),
        "dave" => (
            "Dave",
            api::Role::Normal,
            api::AccountState::PendingDeletion,
            vec![],
        ),
        _ => return None,
    };
    let pending = state == api::AccountState::PendingDeletion;
    Some(api::User {
        username: name.into(),
        jid: format!("{name}@example.org"),
        display_name: display_name.into(),
        role: role as i32,
        state: state as i32,
        last_active_at: (name != "carol").then_some(now - 3 * 86400 - 60),
        created_at: 0,
        deletion_requested_at: pending.then_some(now - 86400),
        pending_until: pending.then_some(now + 6 * 86400 + 600),
        circles,
        avatar_hash: if name == "bob" {
            "00112233445566778899aabbccddeeff00112233".into()
        } else {
            String::new()
        },
    })
}

fn user_or_refuse(name: &str) -> Result<api::User, Status> {
    user(name).ok_or_else(|| refuse(tonic::Code::NotFound, "user-not-found"))
}

fn only_admin() -> Status {
    refuse(tonic::Code::FailedPrecondition, "cannot-remove-only-admin")
}

fn reset_invitation(username: &str) -> api::Invitation {
    api::Invitation {
        token: RESET_TOKEN.into(),
        id: "reset999".into(),
        kind: api::InvitationKind::PasswordReset as i32,
        username: username.into(),
        expires_at: time::OffsetDateTime::now_utc().unix_timestamp() + 86400 - 60,
        landing_url: format!("https://example.org/invite/{RESET_TOKEN}/"),
        xmpp_uri: format!("xmpp:{username}@example.org?register;preauth={RESET_TOKEN}"),
        ..Default::default()
    }
}

#[tonic::async_trait]
impl api::users_server::Users for Fake {
    async fn list_users(
        &self,
        req: tonic::Request<api::ListUsersRequest>,
    ) -> Result<Response<api::ListUsersResponse>, Status> {
        admin(&req)?;
        self.record("list_users".into());
        Ok(Response::new(api::ListUsersResponse {
            users: ["alice", "bob", "carol", "dave"]
                .iter()
                .filter_map(|u| user(u))
                .collect(),
        }))
    }

    async fn get_user(
        &self,
        req: tonic::Request<api::GetUserRequest>,
    ) -> Result<Response<api::User>, Status> {
        admin(&req)?;
        let name = req.into_inner().username;
        self.record(format!("get_user {name}"));
        Ok(Response::new(user_or_refuse(&name)?))
    }

    async fn update_user(
        &self,
        req: tonic::Request<api::UpdateUserRequest>,
    ) -> Result<Response<api::User>, Status> {
        admin(&req)?;
        let r = req.into_inner();
        let role = api::Role::try_from(r.role).unwrap_or(api::Role::Unspecified);
        self.record(format!(
            "update_user {} {:?} {role:?}",
            r.username, r.display_name
        ));
        let mut u = user_or_refuse(&r.username)?;
        if r.username == "alice" && role != api::Role::Admin && role != api::Role::Unspecified {
            return Err(only_admin());
        }
        u.role = r.role;
        Ok(Response::new(u))
    }

    async fn delete_user(
        &self,
        req: tonic::Request<api::DeleteUserRequest>,
    ) -> Result<Response<api::DeleteUserResponse>, Status> {
        admin(&req)?;
        let name = req.into_inner().username;
        self.record(format!("delete_user {name}"));
        user_or_refuse(&name)?;
        if name == "alice" {
            return Err(only_admin());
        }
        Ok(Response::new(api::DeleteUserResponse {}))
    }

    async fn lock_user(
        &self,
        req: tonic::Request<api::LockUserRequest>,
    ) -> Result<Response<api::User>, Status> {
        admin(&req)?;
        let name = req.into_inner().username;
        self.record(format!("lock_user {name}"));
        let u = user_or_refuse(&name)?;
        if name == "alice" {
            return Err(only_admin());
        }
        Ok(Response::new(u))
    }

    async fn unlock_user(
        &self,
        req: tonic::Request<api::UnlockUserRequest>,
    ) -> Result<Response<api::User>, Status> {
        admin(&req)?;
        let name = req.into_inner().username;
        self.record(format!("unlock_user {name}"));
        Ok(Response::new(user_or_refuse(&name)?))
    }

    async fn restore_user(
        &self,
        req: tonic::Request<api::RestoreUserRequest>,
    ) -> Result<Response<api::User>, Status> {
        admin(&req)?;
        let name = req.into_inner().username;
        self.record(format!("restore_user {name}"));
        Ok(Response::new(user_or_refuse(&name)?))
    }

    async fn create_password_reset(
        &self,
        req: tonic::Request<api::CreatePasswordResetRequest>,
    ) -> Result<Response<api::Invitation>, Status> {
        admin(&req)?;
        let r = req.into_inner();
        self.record(format!(
            "create_password_reset {} {}",
            r.username, r.ttl_seconds
        ));
        user_or_refuse(&r.username)?;
        Ok(Response::new(reset_invitation(&r.username)))
    }

    async fn get_user_debug_info(
        &self,
        req: tonic::Request<api::GetUserDebugInfoRequest>,
    ) -> Result<Response<api::UserDebugInfo>, Status> {
        admin(&req)?;
        let name = req.into_inner().username;
        self.record(format!("get_user_debug_info {name}"));
        let u = user_or_refuse(&name)?;
        Ok(Response::new(api::UserDebugInfo {
            time: 86400,
            user: Some(u),
            sessions: vec![api::DebugSession {
                full_jid: format!("{name}@example.org/phone"),
                ip: "192.0.2.7".into(),
                since: 3600,
                connected: true,
                active: true,
                features: vec!["carbons".into(), "acks".into()],
                held_stanzas: 0,
                awaiting_acks: 2,
            }],
            push_registrations: vec![api::PushRegistration {
                id: "push-1".into(),
                service: "push.example.net".into(),
                ..Default::default()
            }],
            omemo: Some(api::OmemoStatus {
                valid: true,
                devices: vec![api::OmemoDevice {
                    id: 4242,
                    have_bundle: true,
                    valid: true,
                }],
            }),
        }))
    }
}

#[tonic::async_trait]
impl api::system_server::System for Fake {
    async fn get_server_info(
        &self,
        req: tonic::Request<api::GetServerInfoRequest>,
    ) -> Result<Response<api::ServerInfo>, Status> {
        admin(&req)?;
        self.record("get_server_info".into());
        Ok(Response::new(api::ServerInfo {
            version: "9.8.7-test".into(),
            site_name: "Test Chat".into(),
            domain: "example.org".into(),
            started_at: 1_700_000_000,
            uptime_seconds: 2 * 86400 + 3 * 3600 + 4 * 60 + 5,
            users_total: 4,
            active_1d: 1,
            active_7d: 2,
            active_30d: 3,
            connected_now: Some(5),
            memory_bytes: Some(50 * 1024 * 1024),
            // 1 % of the uptime above.
            cpu_seconds: Some(1831.45),
            upload_bytes: Some(3 * 1024 * 1024 + 512 * 1024),
        }))
    }

    async fn send_announcement(
        &self,
        req: tonic::Request<api::SendAnnouncementRequest>,
    ) -> Result<Response<api::SendAnnouncementResponse>, Status> {
        admin(&req)?;
        let r = req.into_inner();
        if r.body.trim().is_empty() {
            return Err(refuse(tonic::Code::InvalidArgument, "invalid-argument"));
        }
        let to = api::AnnouncementRecipients::try_from(r.recipients)
            .map(|t| t.as_str_name())
            .unwrap_or("?");
        self.record(format!("send_announcement {to} {}", r.body));
        Ok(Response::new(api::SendAnnouncementResponse {
            recipients: 1,
        }))
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
        .add_service(api::users_server::UsersServer::with_interceptor(
            fake.clone(),
            check.clone(),
        ))
        .add_service(api::system_server::SystemServer::with_interceptor(
            fake.clone(),
            check.clone(),
        ))
        .add_service(api::invitations_server::InvitationsServer::with_interceptor(fake, check))
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
    tokio::spawn(server);
    format!("http://{addr}")
}

/// The certificate manager's and TURN server's status APIs, on one address.
async fn start_status_fake() -> String {
    use snikket_rpc::snikket::{certs::v1 as certs, turn::v1 as turn};
    #[derive(Clone)]
    struct Status;
    #[tonic::async_trait]
    impl certs::certs_server::Certs for Status {
        async fn get_cert_status(
            &self,
            _: tonic::Request<certs::GetCertStatusRequest>,
        ) -> Result<Response<certs::CertStatus>, tonic::Status> {
            Ok(Response::new(certs::CertStatus {
                names: vec![
                    "example.org".into(),
                    "groups.example.org".into(),
                    "share.example.org".into(),
                ],
                not_after: 1_900_000_000,
                next_attempt: 1_800_000_000,
                last_error: "DNS problem: NXDOMAIN".into(),
                self_signed: true,
                acme_enabled: true,
                last_success: 0,
                issuer: "CN=Snikket bootstrap".into(),
            }))
        }
        async fn renew(
            &self,
            _: tonic::Request<certs::RenewRequest>,
        ) -> Result<Response<certs::RenewResponse>, tonic::Status> {
            Err(tonic::Status::unimplemented("not in this test"))
        }
    }
    #[tonic::async_trait]
    impl turn::turn_status_server::TurnStatus for Status {
        async fn get_stats(
            &self,
            _: tonic::Request<turn::GetStatsRequest>,
        ) -> Result<Response<turn::GetStatsResponse>, tonic::Status> {
            Ok(Response::new(turn::GetStatsResponse {
                allocations: 3,
                bytes_to_peers: 1024,
                bytes_from_peers: 512,
                port_min: 50000,
                port_max: 51000,
                ports_in_use: 4,
                calls_supported: 227,
                ..Default::default()
            }))
        }
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind status fake");
    let addr = listener.local_addr().expect("addr");
    let check = snikket_rpc::SecretCheck::new(SECRET);
    let server = tonic::transport::Server::builder()
        .add_service(certs::certs_server::CertsServer::with_interceptor(
            Status,
            check.clone(),
        ))
        .add_service(turn::turn_status_server::TurnStatusServer::with_interceptor(Status, check))
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
    tokio::spawn(server);
    format!("http://{addr}")
}

fn settings() -> Settings {
    Settings {
        site_name: "Test Chat".into(),
        domain: "example.org".into(),
        cookie_key: KEY.to_vec(),
        apple_store_url: None,
        tos_uri: None,
        privacy_uri: None,
        abuse_email: None,
        security_email: None,
        show_metrics: true,
        languages: vec!["en".into(), "de".into()],
        max_avatar_size: 1024 * 1024,
        avatar_cache_ttl: 1800,
    }
}

/// The portal with every policy setting (`SNIKKET_TOS_URI`, `SNIKKET_PRIVACY_URI`,
/// `SNIKKET_ABUSE_EMAIL`, `SNIKKET_SECURITY_EMAIL`) set.
fn app_with_policies(uri: &str) -> axum::Router {
    let settings = Settings {
        tos_uri: Some("https://example.org/tos?a=1&b=2".into()),
        privacy_uri: Some("https://example.org/privacy.html".into()),
        abuse_email: Some("abuse@example.org".into()),
        security_email: Some("security@example.org".into()),
        ..settings()
    };
    app_with(settings, uri, None)
}

fn app(uri: &str) -> axum::Router {
    app_with(settings(), uri, None)
}

/// The portal for `settings`; `status` is the address of the certificate manager's and TURN
/// server's status API (none: nothing answers there).
fn app_with(settings: Settings, uri: &str, status: Option<&str>) -> axum::Router {
    let dead = "http://127.0.0.1:9";
    let status = status.unwrap_or(dead);
    let backend = Backend::new(uri, SECRET)
        .expect("backend")
        .with_status(status, status)
        .expect("status clients");
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

/// A multipart form post with text `fields` and one file (field name, media type, bytes).
fn multipart_post(
    path: &str,
    cookies: &[String],
    fields: &[(&str, &str)],
    file: (&str, &str, &[u8]),
) -> Request<Body> {
    let b = "XyZbOuNdArY";
    let mut body = Vec::new();
    for (name, value) in fields {
        body.extend(
            format!("--{b}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n")
                .as_bytes(),
        );
    }
    let (name, mime, bytes) = file;
    body.extend(
        format!(
            "--{b}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"f\"\r\nContent-Type: {mime}\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend(bytes);
    body.extend(format!("\r\n--{b}--\r\n").as_bytes());
    Request::post(path)
        .header(header::COOKIE, cookies.join("; "))
        .header(
            header::CONTENT_TYPE,
            format!("multipart/form-data; boundary={b}"),
        )
        .body(Body::from(body))
        .expect("request")
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
    // Signed in already: the login page sends you on.
    let again = get(&app, "/login", &cookies).await;
    assert_eq!(again.status, StatusCode::SEE_OTHER);
    assert_eq!(again.location(), "/user/");
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
    // Anonymous visitors are sent to log in; a signed-in user gets the confirmation form.
    let anon = get(&app, "/user/logout", &[]).await;
    assert_eq!(anon.status, StatusCode::SEE_OTHER);
    assert_eq!(anon.headers[header::LOCATION], "/login");
    let (cookies, csrf) = login(&app, "bob", "bob password").await;
    let page = get(&app, "/user/logout", &cookies).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(
        page.body.contains("Sign out of the Snikket Web Portal"),
        "{}",
        page.body
    );
    assert!(
        page.body
            .contains("<form method=\"post\" action=\"/user/logout\">"),
        "{}",
        page.body
    );
    assert!(fake
        .logouts
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .is_empty());
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
    assert!(list
        .body
        .contains("<td data-label=\"Circle(s)\">The Family</td>"));
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
    assert_eq!(
        revoked.location(),
        "/admin/invitations?done=invitation-revoked"
    );
    let list = get(&app, revoked.location(), &alice).await;
    assert!(list.body.contains("Invitation revoked"), "{}", list.body);
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

async fn get_in(app: &axum::Router, path: &str, accept_language: &str) -> Page {
    let req = Request::get(path)
        .header(header::ACCEPT_LANGUAGE, accept_language)
        .body(Body::empty())
        .expect("request");
    call(app, req).await
}

/// Status, content type and raw body of a GET.
async fn get_bytes(app: &axum::Router, path: &str) -> (StatusCode, String, Vec<u8>) {
    let req = Request::get(path).body(Body::empty()).expect("request");
    let resp = app.clone().oneshot(req).await.expect("infallible");
    let status = resp.status();
    let mime = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    (status, mime, bytes.to_vec())
}

#[tokio::test]
async fn manifest_icons_and_favicons_exist_in_their_sizes() {
    let app = app(&start_fake(Fake::default()).await);
    let m = get(&app, "/site.webmanifest", &[]).await;
    let manifest: serde_json::Value = serde_json::from_str(&m.body).expect("manifest is JSON");
    let mut icons: Vec<(String, u32)> = manifest["icons"]
        .as_array()
        .expect("icons")
        .iter()
        .map(|i| {
            let side = i["sizes"]
                .as_str()
                .and_then(|s| s.split('x').next())
                .and_then(|n| n.parse().ok());
            (
                i["src"].as_str().unwrap_or_default().to_string(),
                side.unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(icons.len(), 3);
    let login = get(&app, "/login", &[]).await;
    for (path, side) in [
        ("/static/img/favicon-32x32.png", 32),
        ("/static/img/apple-touch-icon.png", 180),
    ] {
        assert!(
            login.body.contains(&format!("href=\"{path}\"")),
            "{path} not linked"
        );
        icons.push((path.to_string(), side));
    }
    for (path, side) in icons {
        let (status, mime, png) = get_bytes(&app, &path).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert_eq!(mime, "image/png", "{path}");
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "{path}");
        // IHDR: width and height, big-endian, right after the chunk header.
        let dim = |at: usize| {
            png.get(at..at + 4)
                .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        };
        assert_eq!((dim(16), dim(20)), (Some(side), Some(side)), "{path}");
    }
    let (status, mime, svg) = get_bytes(&app, "/static/img/logo.svg").await;
    assert_eq!((status, mime.as_str()), (StatusCode::OK, "image/svg+xml"));
    assert!(svg.starts_with(b"<svg"));
    assert_eq!(
        get_bytes(&app, "/static/img/nope.png").await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn avatar_size_and_cache_time_follow_the_settings() {
    let fake = Fake::default();
    let small = Settings {
        max_avatar_size: 1000,
        avatar_cache_ttl: 60,
        ..settings()
    };
    let app = app_with(small, &start_fake(fake.clone()).await, None);
    let (carol, csrf) = login(&app, "carol", "carol password").await;
    let upload = |file: &[u8]| {
        multipart_post(
            "/user/profile",
            &carol,
            &[("csrf", &csrf), ("nickname", "Caro")],
            ("avatar", "image/png", file),
        )
    };
    let big = call(&app, upload(&[b'x'; 1001])).await;
    assert_eq!(big.status, StatusCode::BAD_REQUEST);
    assert!(
        big.body.contains("The chosen avatar is too big"),
        "{}",
        big.body
    );
    assert!(fake.take_changes().is_empty());
    let ok = call(&app, upload(&[b'x'; 1000])).await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER, "{}", ok.body);
    assert_eq!(fake.take_changes().len(), 1);
    let img = get(&app, "/avatar/Y2Fyb2xAZXhhbXBsZS5vcmc/ABEiM0RVZnc", &carol).await;
    assert_eq!(img.status, StatusCode::OK);
    assert_eq!(img.headers[header::CACHE_CONTROL], "private, max-age=60");
    assert!(img.headers.contains_key(header::EXPIRES));
}

#[tokio::test]
async fn pages_follow_accept_language() {
    let app = app(&start_fake(Fake::default()).await);
    let de = get_in(&app, "/login", "de-AT, en;q=0.5").await;
    assert_eq!(de.status, StatusCode::OK, "{}", de.body);
    assert!(de.body.contains("<html lang=\"de\">"), "{}", de.body);
    assert!(de.body.contains("<h1>Anmelden</h1>"), "{}", de.body);
    assert_eq!(de.headers[header::CONTENT_LANGUAGE], "de");
    assert!(de
        .headers
        .get_all(header::VARY)
        .iter()
        .any(|v| v == "Accept-Language"));

    // Quality values decide; a language that is not offered falls back to the first configured.
    let en = get_in(&app, "/login", "fr, de;q=0.1, en;q=0.9").await;
    assert!(en.body.contains("<html lang=\"en\">") && en.body.contains("<h1>Log in</h1>"));
    let fr = get_in(&app, "/login", "fr").await;
    assert!(fr.body.contains("<h1>Log in</h1>"));
    assert_eq!(fr.headers[header::CONTENT_LANGUAGE], "en");

    // The invite page: values inside translated markup, texts made in Rust, error pages.
    let invite = get_in(&app, &format!("/invite/{TOKEN}/"), "de").await;
    assert!(
        invite
            .body
            .contains("<strong>alice</strong> hat dich eingeladen"),
        "{}",
        invite.body
    );
    let gone = get_in(&app, "/invite/zzzzzzzzzzzzzzzzzzzzzzzz/", "de").await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    assert!(gone.body.contains("Einladung abgelaufen"), "{}", gone.body);
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

// ---------------------------------------------------------------------------------------------
// Admin panel: users, circles, system

/// Every admin GET page added for users, circles and the system.
const ADMIN_PAGES: [&str; 12] = [
    "/admin/users",
    "/admin/user/bob/",
    "/admin/user/bob/delete",
    "/admin/user/bob/debug",
    "/admin/users/password-reset/reset999",
    "/admin/circles",
    "/admin/circle/frnds1234567/",
    "/admin/circle/frnds1234567/delete",
    "/admin/circle/frnds1234567/add_chat",
    "/admin/system",
    "/admin/system/",
    "/admin/",
];

/// Every admin POST action with otherwise valid fields (no csrf).
fn admin_actions() -> Vec<(&'static str, Vec<(&'static str, &'static str)>)> {
    vec![
        (
            "/admin/user/bob/",
            vec![("display_name", "Bobby"), ("role", "admin")],
        ),
        ("/admin/user/bob/lock", vec![]),
        ("/admin/user/carol/unlock", vec![]),
        ("/admin/user/dave/restore", vec![]),
        ("/admin/user/bob/reset", vec![]),
        ("/admin/user/bob/delete", vec![]),
        ("/admin/users/password-reset/reset999", vec![]),
        ("/admin/circle/-/new", vec![("name", "Book club")]),
        ("/admin/circle/frnds1234567/rename", vec![("name", "Pals")]),
        ("/admin/circle/frnds1234567/delete", vec![]),
        (
            "/admin/circle/frnds1234567/members/add",
            vec![("username", "alice")],
        ),
        (
            "/admin/circle/frnds1234567/members/remove",
            vec![("username", "bob")],
        ),
        (
            "/admin/circle/frnds1234567/add_chat",
            vec![("name", "Book talk")],
        ),
        (
            "/admin/circle/default/chats/remove",
            vec![("chat_id", "familychat")],
        ),
    ]
}

fn revoked(fake: &Fake) -> Vec<String> {
    fake.revoked
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
}

#[tokio::test]
async fn admin_panel_refuses_anonymous_and_non_admins() {
    let fake = Fake::default();
    let app = app(&start_fake(fake.clone()).await);
    let (bob, bob_csrf) = login(&app, "bob", "bob password").await;
    for path in ADMIN_PAGES {
        let anon = get(&app, path, &[]).await;
        assert_eq!(anon.status, StatusCode::SEE_OTHER, "{path}");
        assert_eq!(anon.location(), "/login", "{path}");
        let p = get(&app, path, &bob).await;
        assert_eq!(p.status, StatusCode::FORBIDDEN, "{path}");
        assert!(p.body.contains("This is not for you."), "{path}");
    }
    for (path, fields) in admin_actions() {
        let mut form = fields.clone();
        form.push(("csrf", &bob_csrf));
        let anon = post(&app, path, &[], &form).await;
        assert_eq!(anon.location(), "/login", "{path}");
        let p = post(&app, path, &bob, &form).await;
        assert_eq!(p.status, StatusCode::FORBIDDEN, "{path}");
    }
    assert_eq!(fake.take_calls(), Vec::<String>::new());
    assert!(revoked(&fake).is_empty());
}

#[tokio::test]
async fn admin_actions_need_a_valid_csrf_token() {
    let fake = Fake::default();
    let app = app(&start_fake(fake.clone()).await);
    let (alice, csrf) = login(&app, "alice", "alice password").await;
    for (path, fields) in admin_actions() {
        let missing = post(&app, path, &alice, &fields).await;
        assert_eq!(missing.status, StatusCode::BAD_REQUEST, "{path}");
        assert!(missing.body.contains("Form expired"), "{path}");
        let mut wrong = fields.clone();
        wrong.push(("csrf", "not-the-token"));
        let p = post(&app, path, &alice, &wrong).await;
        assert_eq!(p.status, StatusCode::BAD_REQUEST, "{path}");
        assert!(p.body.contains("Form expired"), "{path}");
    }
    assert_eq!(fake.take_changes(), Vec::<String>::new());
    assert!(revoked(&fake).is_empty());
    // The same requests with the token do reach the server (so the refusals above were the
    // token's doing).
    for (path, fields) in admin_actions() {
        let mut form = fields.clone();
        form.push(("csrf", &csrf));
        let p = post(&app, path, &alice, &form).await;
        assert_eq!(p.status, StatusCode::SEE_OTHER, "{path}: {}", p.body);
    }
    assert_eq!(fake.take_changes().len(), admin_actions().len() - 1);
    assert_eq!(revoked(&fake), ["reset999".to_string()]);
}

#[tokio::test]
async fn admin_home_links_every_section() {
    let app = app(&start_fake(Fake::default()).await);
    let (alice, _) = login(&app, "alice", "alice password").await;
    let home = get(&app, "/admin/", &alice).await;
    assert_eq!(home.status, StatusCode::OK);
    for href in [
        "/admin/users",
        "/admin/circles",
        "/admin/invitations",
        "/admin/system",
    ] {
        // Once in the admin navigation, once in the page.
        assert_eq!(
            home.body.matches(&format!("href=\"{href}\"")).count(),
            2,
            "{href}"
        );
    }
    // The admin navigation is on the other admin pages too.
    let list = get(&app, "/admin/invitations", &alice).await;
    assert!(list.body.contains("<a href=\"/admin/circles\">Circles</a>"));
}

#[tokio::test]
async fn admin_user_list_and_pages() {
    let fake = Fake::default();
    let app = app(&start_fake(fake.clone()).await);
    let (alice, _) = login(&app, "alice", "alice password").await;

    let list = get(&app, "/admin/users", &alice).await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.body);
    for text in [
        "Alice A.",
        "bob@example.org",
        "Carol &lt;C&gt;",
        "<td>Administrator</td>",
        "<td>Limited</td>",
        "<span class=\"badge\">Locked</span>",
        "<span class=\"badge\">Deleted</span>",
        "3 days ago",
        "href=\"/admin/user/bob/\"",
        "href=\"/admin/user/dave/\"",
        // bob's avatar (HTML-escaped path), nobody else has one.
        "src=\"&#x2f;avatar&#x2f;Ym9iQGV4YW1wbGUub3Jn&#x2f;ABEiM0RVZnc\"",
    ] {
        assert!(list.body.contains(text), "{text} missing: {}", list.body);
    }
    assert!(!list.body.contains("Carol <C>"));
    assert_eq!(fake.take_calls(), ["list_users"]);

    let bob = get(&app, "/admin/user/bob/", &alice).await;
    assert_eq!(bob.status, StatusCode::OK, "{}", bob.body);
    assert!(bob.body.contains("value=\"normal\" checked"));
    assert!(!bob.body.contains("value=\"admin\" checked"));
    assert!(bob.body.contains("action=\"/admin/user/bob/lock\""));
    assert!(bob.body.contains("action=\"/admin/user/bob/reset\""));
    assert!(bob.body.contains("href=\"/admin/user/bob/delete\""));
    assert!(bob.body.contains("href=\"/admin/user/bob/debug\""));
    assert!(bob.body.contains(">The Family</a>"));
    assert!(bob.body.contains(">Friends &lt;3</a>"));
    assert!(!bob.body.contains("is locked"));
    assert_eq!(fake.take_calls(), ["get_user bob", "list_circles"]);

    let carol = get(&app, "/admin/user/carol/", &alice).await;
    assert!(carol.body.contains("This user account is locked"));
    assert!(carol.body.contains("action=\"/admin/user/carol/unlock\""));
    assert!(carol.body.contains("value=\"limited\" checked"));
    assert!(!carol.body.contains("action=\"/admin/user/carol/lock\""));
    let dave = get(&app, "/admin/user/dave/", &alice).await;
    assert!(dave.body.contains("pending deletion"));
    assert!(dave.body.contains("in 6 days"));
    assert!(dave.body.contains("action=\"/admin/user/dave/restore\""));

    let missing = get(&app, "/admin/user/nobody/", &alice).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert!(missing.body.contains("There is no such user."));
    let slash = get(&app, "/admin/user/bob", &alice).await;
    assert_eq!(slash.status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(slash.location(), "/admin/user/bob/");
    fake.take_calls();
    // A malformed localpart never reaches the server.
    let bad = get(&app, "/admin/user/a%40b/", &alice).await;
    assert_eq!(bad.status, StatusCode::NOT_FOUND);
    assert_eq!(fake.take_calls(), Vec::<String>::new());

    let debug = get(&app, "/admin/user/bob/debug", &alice).await;
    assert_eq!(debug.status, StatusCode::OK, "{}", debug.body);
    assert!(debug.body.contains("sensitive information"));
    assert!(debug.body.contains("<td>192.0.2.7</td>"));
    assert!(debug.body.contains("connected, active"));
    assert!(debug
        .body
        .contains("1 push registration(s), 1 OMEMO device(s)"));
    assert!(debug.body.contains("push.example.net"));
    assert!(debug.body.contains("4242"));
    assert!(debug.body.contains("data-copy=\"dump\""));
    assert_eq!(fake.take_calls(), ["get_user_debug_info bob"]);
    let no_debug = get(&app, "/admin/user/nobody/debug", &alice).await;
    assert_eq!(no_debug.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn admin_user_actions() {
    let fake = Fake::default();
    let app = app(&start_fake(fake.clone()).await);
    let (alice, csrf) = login(&app, "alice", "alice password").await;
    let c = csrf.as_str();

    // Edit: display name (trimmed) and role.
    let saved = post(
        &app,
        "/admin/user/bob/",
        &alice,
        &[
            ("csrf", c),
            ("display_name", "  Bobby  "),
            ("role", "admin"),
        ],
    )
    .await;
    assert_eq!(saved.status, StatusCode::SEE_OTHER, "{}", saved.body);
    assert_eq!(saved.location(), "/admin/users?done=updated");
    assert_eq!(
        fake.take_changes(),
        ["update_user bob Some(\"Bobby\") Admin"]
    );
    let listed = get(&app, saved.location(), &alice).await;
    assert!(listed.body.contains("User information updated."));
    let limited = post(
        &app,
        "/admin/user/bob/",
        &alice,
        &[("csrf", c), ("display_name", ""), ("role", "limited")],
    )
    .await;
    assert_eq!(limited.status, StatusCode::SEE_OTHER);
    assert_eq!(fake.take_changes(), ["update_user bob Some(\"\") Limited"]);
    // The server's last-admin refusal is shown on the user page.
    let demote = post(
        &app,
        "/admin/user/alice/",
        &alice,
        &[
            ("csrf", c),
            ("display_name", "Alice A."),
            ("role", "normal"),
        ],
    )
    .await;
    assert_eq!(demote.status, StatusCode::BAD_REQUEST);
    assert!(demote
        .body
        .contains("This would leave the service without an administrator."));
    assert!(demote.body.contains("Edit user"));
    assert_eq!(
        fake.take_changes(),
        ["update_user alice Some(\"Alice A.\") Normal"]
    );
    let no_role = post(
        &app,
        "/admin/user/bob/",
        &alice,
        &[("csrf", c), ("display_name", "x"), ("role", "root")],
    )
    .await;
    assert_eq!(no_role.status, StatusCode::BAD_REQUEST);
    assert!(no_role.body.contains("Please choose a role."));
    assert_eq!(fake.take_changes(), Vec::<String>::new());
    let unknown = post(
        &app,
        "/admin/user/nobody/",
        &alice,
        &[("csrf", c), ("display_name", "x"), ("role", "normal")],
    )
    .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert!(unknown.body.contains("There is no such user."));
    fake.take_calls();

    // Lock, unlock, restore.
    let lock = post(&app, "/admin/user/bob/lock", &alice, &[("csrf", c)]).await;
    assert_eq!(lock.location(), "/admin/user/bob/?done=locked");
    assert_eq!(fake.take_changes(), ["lock_user bob"]);
    assert!(get(&app, lock.location(), &alice)
        .await
        .body
        .contains("User account locked."));
    let lock_self = post(&app, "/admin/user/alice/lock", &alice, &[("csrf", c)]).await;
    assert_eq!(lock_self.status, StatusCode::BAD_REQUEST);
    assert!(lock_self.body.contains("without an administrator"));
    fake.take_calls();
    let unlock = post(&app, "/admin/user/carol/unlock", &alice, &[("csrf", c)]).await;
    assert_eq!(unlock.location(), "/admin/users?done=unlocked");
    let restore = post(&app, "/admin/user/dave/restore", &alice, &[("csrf", c)]).await;
    assert_eq!(restore.location(), "/admin/users?done=restored");
    assert_eq!(
        fake.take_changes(),
        ["unlock_user carol", "restore_user dave"]
    );

    // Delete, with its confirmation page.
    let confirm = get(&app, "/admin/user/bob/delete", &alice).await;
    assert_eq!(confirm.status, StatusCode::OK);
    assert!(confirm.body.contains("deleted irrevocably"));
    assert!(confirm.body.contains("action=\"/admin/user/bob/delete\""));
    assert_eq!(fake.take_changes(), Vec::<String>::new());
    let deleted = post(&app, "/admin/user/bob/delete", &alice, &[("csrf", c)]).await;
    assert_eq!(deleted.location(), "/admin/users?done=deleted-user");
    assert_eq!(fake.take_changes(), ["delete_user bob"]);
    let last_admin = post(&app, "/admin/user/alice/delete", &alice, &[("csrf", c)]).await;
    assert_eq!(last_admin.status, StatusCode::BAD_REQUEST);
    assert!(last_admin.body.contains("without an administrator"));
    assert!(last_admin.body.contains("Delete user permanently"));
    let gone = post(&app, "/admin/user/nobody/delete", &alice, &[("csrf", c)]).await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    assert!(gone.body.contains("There is no such user."));
    assert_eq!(
        fake.take_changes(),
        ["delete_user alice", "delete_user nobody"]
    );

    // Password reset link: created for a day, shown with the server's landing URL, destroyed.
    let reset = post(&app, "/admin/user/bob/reset", &alice, &[("csrf", c)]).await;
    assert_eq!(reset.status, StatusCode::SEE_OTHER, "{}", reset.body);
    assert_eq!(reset.location(), "/admin/users/password-reset/reset999");
    assert_eq!(fake.take_changes(), ["create_password_reset bob 86400"]);
    let link = get(&app, reset.location(), &alice).await;
    assert_eq!(link.status, StatusCode::OK, "{}", link.body);
    assert!(link.body.contains("Password reset link for bob"));
    assert!(
        link.body.contains(&format!(
            "value=\"https:&#x2f;&#x2f;example.org&#x2f;invite&#x2f;{RESET_TOKEN}&#x2f;\""
        )),
        "{}",
        link.body
    );
    assert!(link.body.contains("in 23 hours"));
    assert!(link.body.contains("<svg"));
    // An invitation that is not a password reset is not shown here.
    let other = get(&app, "/admin/users/password-reset/abcd1234", &alice).await;
    assert_eq!(other.status, StatusCode::NOT_FOUND);
    assert!(other.body.contains("Password reset link not found."));
    let destroyed = post(
        &app,
        "/admin/users/password-reset/reset999",
        &alice,
        &[("csrf", c)],
    )
    .await;
    assert_eq!(destroyed.location(), "/admin/user/bob/?done=reset-revoked");
    assert_eq!(revoked(&fake), ["reset999".to_string()]);
    let no_reset = post(&app, "/admin/user/nobody/reset", &alice, &[("csrf", c)]).await;
    assert_eq!(no_reset.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn admin_circle_list_and_create() {
    let fake = Fake::default();
    let app = app(&start_fake(fake.clone()).await);
    let (alice, csrf) = login(&app, "alice", "alice password").await;
    let c = csrf.as_str();
    let list = get(&app, "/admin/circles", &alice).await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.body);
    assert!(list
        .body
        .contains("<td>Friends &lt;3</td>\n      <td data-label=\"Members\">2</td>\n      <td data-label=\"Group chats\">0</td>"));
    assert!(list.body.contains(
        "<td>The Family <span class=\"badge\">main</span></td>\n      <td data-label=\"Members\">2</td>\n      <td data-label=\"Group chats\">1</td>"
    ));
    assert!(list.body.contains("href=\"/admin/circle/frnds1234567/\""));
    assert!(list.body.contains("action=\"/admin/circle/-/new\""));
    // Sorted by name: "Friends" before "The Family".
    assert!(
        list.body.find("Friends").unwrap_or(usize::MAX) < list.body.find("The Family").unwrap_or(0)
    );

    let created = post(
        &app,
        "/admin/circle/-/new",
        &alice,
        &[("csrf", c), ("name", " Book club ")],
    )
    .await;
    assert_eq!(created.status, StatusCode::SEE_OTHER, "{}", created.body);
    assert_eq!(
        created.location(),
        "/admin/circle/new123456789/?done=created"
    );
    assert_eq!(fake.take_changes(), ["create_circle Book club"]);
    let empty = post(
        &app,
        "/admin/circle/-/new",
        &alice,
        &[("csrf", c), ("name", "  ")],
    )
    .await;
    assert_eq!(empty.status, StatusCode::BAD_REQUEST);
    assert!(empty.body.contains("Please enter a name."));
    assert_eq!(fake.take_changes(), Vec::<String>::new());
    let refused = post(
        &app,
        "/admin/circle/-/new",
        &alice,
        &[("csrf", c), ("name", "refuse me")],
    )
    .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert!(refused.body.contains("Please enter a name."));
    assert!(refused.body.contains("value=\"refuse me\""));
    assert_eq!(fake.take_changes(), ["create_circle refuse me"]);
}

#[tokio::test]
async fn admin_circle_page_and_actions() {
    let fake = Fake::default();
    let app = app(&start_fake(fake.clone()).await);
    let (alice, csrf) = login(&app, "alice", "alice password").await;
    let c = csrf.as_str();

    let friends = get(&app, "/admin/circle/frnds1234567/", &alice).await;
    assert_eq!(friends.status, StatusCode::OK, "{}", friends.body);
    assert!(friends.body.contains("value=\"Friends &lt;3\""));
    assert!(friends
        .body
        .contains("action=\"/admin/circle/frnds1234567/rename\""));
    assert!(friends
        .body
        .contains("href=\"/admin/circle/frnds1234567/delete\""));
    assert!(friends.body.contains("ghost (deleted)"));
    assert!(friends.body.contains("href=\"/admin/user/bob/\""));
    assert!(friends
        .body
        .contains("This circle currently has no group chats."));
    // The add-member choice offers exactly the users who are not members yet.
    for u in ["alice", "carol", "dave"] {
        assert!(
            friends.body.contains(&format!("<option value=\"{u}\">")),
            "{u}"
        );
    }
    assert!(!friends.body.contains("<option value=\"bob\">"));
    assert!(friends
        .body
        .contains("name=\"circle\" value=\"frnds1234567\""));
    assert_eq!(fake.take_calls(), ["get_circle frnds1234567", "list_users"]);

    let family = get(&app, "/admin/circle/default/", &alice).await;
    assert_eq!(family.status, StatusCode::OK);
    assert!(family.body.contains("This is your main circle."));
    assert!(!family.body.contains("/admin/circle/default/rename"));
    assert!(!family.body.contains("/admin/circle/default/delete"));
    assert!(family.body.contains("<td>Family chat</td>"));
    assert!(family
        .body
        .contains("name=\"chat_id\" value=\"familychat\""));
    assert!(
        family.body.contains("All users added.")
            || family.body.contains("<option value=\"carol\">")
    );

    let missing = get(&app, "/admin/circle/nope12345678/", &alice).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert!(missing.body.contains("There is no such circle."));
    let slash = get(&app, "/admin/circle/frnds1234567", &alice).await;
    assert_eq!(slash.location(), "/admin/circle/frnds1234567/");
    fake.take_calls();

    // Rename, with the default circle's protection shown as text.
    let renamed = post(
        &app,
        "/admin/circle/frnds1234567/rename",
        &alice,
        &[("csrf", c), ("name", "Pals")],
    )
    .await;
    assert_eq!(
        renamed.location(),
        "/admin/circle/frnds1234567/?done=renamed"
    );
    assert_eq!(fake.take_changes(), ["rename_circle frnds1234567 Pals"]);
    let protected = post(
        &app,
        "/admin/circle/default/rename",
        &alice,
        &[("csrf", c), ("name", "Pals")],
    )
    .await;
    assert_eq!(protected.status, StatusCode::BAD_REQUEST);
    assert!(protected
        .body
        .contains("The default circle cannot be renamed or deleted."));
    assert_eq!(fake.take_changes(), ["rename_circle default Pals"]);
    let blank = post(
        &app,
        "/admin/circle/frnds1234567/rename",
        &alice,
        &[("csrf", c), ("name", "")],
    )
    .await;
    assert_eq!(blank.status, StatusCode::BAD_REQUEST);
    assert!(blank.body.contains("Please enter a name."));
    assert_eq!(fake.take_changes(), Vec::<String>::new());

    // Members.
    let added = post(
        &app,
        "/admin/circle/frnds1234567/members/add",
        &alice,
        &[("csrf", c), ("username", "alice")],
    )
    .await;
    assert_eq!(
        added.location(),
        "/admin/circle/frnds1234567/?done=member-added#members"
    );
    let removed = post(
        &app,
        "/admin/circle/frnds1234567/members/remove",
        &alice,
        &[("csrf", c), ("username", "bob")],
    )
    .await;
    assert_eq!(
        removed.location(),
        "/admin/circle/frnds1234567/?done=member-removed#members"
    );
    assert_eq!(
        fake.take_changes(),
        [
            "add_circle_member frnds1234567 alice",
            "remove_circle_member frnds1234567 bob"
        ]
    );
    let stranger = post(
        &app,
        "/admin/circle/frnds1234567/members/add",
        &alice,
        &[("csrf", c), ("username", "nobody")],
    )
    .await;
    assert_eq!(stranger.status, StatusCode::BAD_REQUEST);
    assert!(stranger.body.contains("There is no such user."));
    assert!(stranger.body.contains("Circle members"));
    let nobody = post(
        &app,
        "/admin/circle/frnds1234567/members/add",
        &alice,
        &[("csrf", c)],
    )
    .await;
    assert_eq!(nobody.status, StatusCode::BAD_REQUEST);
    assert!(nobody.body.contains("Please choose a user."));
    assert_eq!(
        fake.take_changes(),
        ["add_circle_member frnds1234567 nobody"]
    );
    let without_fragment = added.location().split('#').next().unwrap_or_default();
    let notice = get(&app, without_fragment, &alice).await;
    assert!(notice.body.contains("User added to circle."));

    // Group chats.
    let form = get(&app, "/admin/circle/frnds1234567/add_chat", &alice).await;
    assert_eq!(form.status, StatusCode::OK);
    assert!(form.body.contains("Create new circle group chat"));
    let chat = post(
        &app,
        "/admin/circle/frnds1234567/add_chat",
        &alice,
        &[("csrf", c), ("name", "Book talk")],
    )
    .await;
    assert_eq!(
        chat.location(),
        "/admin/circle/frnds1234567/?done=chat-added"
    );
    let unnamed = post(
        &app,
        "/admin/circle/frnds1234567/add_chat",
        &alice,
        &[("csrf", c), ("name", " ")],
    )
    .await;
    assert_eq!(unnamed.status, StatusCode::BAD_REQUEST);
    assert!(unnamed.body.contains("Please enter a name."));
    let dropped = post(
        &app,
        "/admin/circle/default/chats/remove",
        &alice,
        &[("csrf", c), ("chat_id", "familychat")],
    )
    .await;
    assert_eq!(
        dropped.location(),
        "/admin/circle/default/?done=chat-removed"
    );
    let unknown_chat = post(
        &app,
        "/admin/circle/default/chats/remove",
        &alice,
        &[("csrf", c), ("chat_id", "nochat")],
    )
    .await;
    assert_eq!(unknown_chat.status, StatusCode::BAD_REQUEST);
    assert!(unknown_chat.body.contains("There is no such group chat."));
    assert_eq!(
        fake.take_changes(),
        [
            "add_circle_chat frnds1234567 Book talk",
            "remove_circle_chat default familychat",
            "remove_circle_chat default nochat"
        ]
    );

    // Delete, with its confirmation page.
    let confirm = get(&app, "/admin/circle/frnds1234567/delete", &alice).await;
    assert_eq!(confirm.status, StatusCode::OK);
    assert!(confirm.body.contains("Delete circle Friends &lt;3"));
    assert!(confirm.body.contains("2 member(s), 0 group chat(s)."));
    assert_eq!(fake.take_changes(), Vec::<String>::new());
    let deleted = post(
        &app,
        "/admin/circle/frnds1234567/delete",
        &alice,
        &[("csrf", c)],
    )
    .await;
    assert_eq!(deleted.location(), "/admin/circles?done=deleted-circle");
    assert!(get(&app, deleted.location(), &alice)
        .await
        .body
        .contains("Circle deleted."));
    let keep = post(&app, "/admin/circle/default/delete", &alice, &[("csrf", c)]).await;
    assert_eq!(keep.status, StatusCode::BAD_REQUEST);
    assert!(keep
        .body
        .contains("The default circle cannot be renamed or deleted."));
    let gone = post(
        &app,
        "/admin/circle/nope12345678/delete",
        &alice,
        &[("csrf", c)],
    )
    .await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    assert!(gone.body.contains("There is no such circle."));
    assert_eq!(
        fake.take_changes(),
        [
            "delete_circle frnds1234567",
            "delete_circle default",
            "delete_circle nope12345678"
        ]
    );
}

#[tokio::test]
async fn admin_system_page() {
    let fake = Fake::default();
    let app = app(&start_fake(fake.clone()).await);
    let (alice, _) = login(&app, "alice", "alice password").await;
    for path in ["/admin/system", "/admin/system/"] {
        let p = get(&app, path, &alice).await;
        assert_eq!(p.status, StatusCode::OK, "{}", p.body);
        for text in [
            "<td>9.8.7-test</td>",
            "<td>example.org</td>",
            "2023-11-14 22:13 UTC",
            "<td>2 days, 3 hours, 4 minutes</td>",
            "<tr><th>Accounts</th><td>4</td></tr>",
            "<tr><th>Active in the past 24 hours</th><td>1</td></tr>",
            "<tr><th>Active in the past 7 days</th><td>2</td></tr>",
            "<tr><th>Active in the past 30 days</th><td>3</td></tr>",
            "<tr><th>Connected now</th><td>5</td></tr>",
            "Broadcast message",
            // Metrics: the server's figures, the portal's and the host's own.
            "<tr><th>Average CPU use</th><td>1.0 %</td></tr>",
            "<tr><th>Current memory use</th><td>50 MiB</td></tr>",
            "<tr><th>Storage used by shared files</th><td>3.5 MiB</td></tr>",
            "System load (5 minute average)",
            "Of that, Snikket uses",
            // Nothing answers at the other services' status address.
            "The certificate manager is not reachable",
            "The TURN server is not reachable",
        ] {
            assert!(p.body.contains(text), "{text} missing: {}", p.body);
        }
    }
    assert_eq!(fake.take_calls(), ["get_server_info", "get_server_info"]);

    // With the status APIs answering, and with metrics turned off.
    let status = start_status_fake().await;
    let quiet = Settings {
        show_metrics: false,
        ..settings()
    };
    let app2 = app_with(quiet, &start_fake(fake.clone()).await, Some(&status));
    let (alice2, _) = login(&app2, "alice", "alice password").await;
    let p = get(&app2, "/admin/system/", &alice2).await;
    assert_eq!(p.status, StatusCode::OK, "{}", p.body);
    for text in [
        "<td>example.org, groups.example.org, share.example.org</td>",
        "temporary self-signed certificate",
        "Last attempt failed: DNS problem",
        "<tr><th>Relay allocations now</th><td>3</td></tr>",
        "4 of 1001 (enough for 227 simultaneous calls)",
        "<tr><th>Relayed since start</th><td>1.5 KiB</td></tr>",
    ] {
        assert!(p.body.contains(text), "{text} missing: {}", p.body);
    }
    assert!(!p.body.contains("System load"), "metrics shown: {}", p.body);
    fake.take_calls();

    // Broadcast: CSRF checked; a preview stays on the page, a post redirects with a notice.
    let page = get(&app, "/admin/system/", &alice).await;
    let csrf = page.csrf();
    let forged = post(
        &app,
        "/admin/system/",
        &alice,
        &[("csrf", "x"), ("text", "hi")],
    )
    .await;
    assert_eq!(forged.status, StatusCode::BAD_REQUEST);
    fake.take_calls();
    let p = post(
        &app,
        "/admin/system/",
        &alice,
        &[
            ("csrf", &csrf),
            ("text", "Hello all"),
            ("action", "preview"),
        ],
    )
    .await;
    assert_eq!(p.status, StatusCode::OK);
    assert!(p.body.contains("Announcement sent!"));
    let p = post(
        &app,
        "/admin/system/",
        &alice,
        &[
            ("csrf", &csrf),
            ("text", "To the online"),
            ("online_only", "1"),
            ("action", "post"),
        ],
    )
    .await;
    assert_eq!(p.status, StatusCode::SEE_OTHER);
    assert_eq!(p.location(), "/admin/system/?done=announced");
    let p = post(
        &app,
        "/admin/system/",
        &alice,
        &[("csrf", &csrf), ("text", "To everyone"), ("action", "post")],
    )
    .await;
    assert_eq!(p.status, StatusCode::SEE_OTHER);
    let p = post(
        &app,
        "/admin/system/",
        &alice,
        &[("csrf", &csrf), ("text", " ")],
    )
    .await;
    assert_eq!(p.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        fake.take_changes(),
        [
            "send_announcement ANNOUNCEMENT_RECIPIENTS_PREVIEW Hello all",
            "send_announcement ANNOUNCEMENT_RECIPIENTS_ONLINE To the online",
            "send_announcement ANNOUNCEMENT_RECIPIENTS_ALL To everyone",
        ]
    );
    let shown = get(&app, "/admin/system/?done=announced", &alice).await;
    assert!(shown.body.contains("Announcement sent!"));
    let (bob, _) = login(&app, "bob", "bob password").await;
    let refused = post(
        &app,
        "/admin/system/",
        &bob,
        &[("csrf", &csrf), ("text", "x")],
    )
    .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn terms_and_privacy_redirect_or_404() {
    let plain = app("http://127.0.0.1:9");
    for path in ["/terms", "/privacy"] {
        let p = get(&plain, path, &[]).await;
        assert_eq!(p.status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(p.body, "", "{path}");
    }
    let set = app_with_policies("http://127.0.0.1:9");
    let t = get(&set, "/terms", &[]).await;
    assert_eq!(t.status, StatusCode::SEE_OTHER);
    assert_eq!(t.location(), "https://example.org/tos?a=1&b=2");
    let p = get(&set, "/privacy", &[]).await;
    assert_eq!(p.status, StatusCode::SEE_OTHER);
    assert_eq!(p.location(), "https://example.org/privacy.html");
}

#[tokio::test]
async fn policies_page() {
    let plain = get(&app("http://127.0.0.1:9"), "/policies/", &[]).await;
    assert_eq!(plain.status, StatusCode::OK);
    assert!(plain.headers[header::CONTENT_TYPE]
        .to_str()
        .expect("ascii")
        .starts_with("text/html"));
    assert!(plain.body.contains("Please contact the administrator"));
    assert!(plain
        .body
        .contains("href=\"https://snikket.org/app/privacy/\""));
    assert!(!plain.body.contains("Terms of Service"));
    assert!(!plain.body.contains("mailto:"));
    let set = get(&app_with_policies("http://127.0.0.1:9"), "/policies/", &[]).await;
    assert_eq!(set.status, StatusCode::OK);
    assert!(!set.body.contains("Please contact the administrator"));
    assert!(set
        .body
        .contains("href=\"https:&#x2f;&#x2f;example.org&#x2f;tos?a=1&amp;b=2\""));
    assert!(set
        .body
        .contains("href=\"https:&#x2f;&#x2f;example.org&#x2f;privacy.html\""));
    assert!(set
        .body
        .contains("href=\"https://snikket.org/app/privacy/\""));
    assert!(set.body.contains("href=\"mailto:abuse@example.org\""));
}

#[tokio::test]
async fn security_txt() {
    let plain = get(&app("http://127.0.0.1:9"), "/.well-known/security.txt", &[]).await;
    assert_eq!(plain.status, StatusCode::OK);
    assert_eq!(
        plain.headers[header::CONTENT_TYPE],
        "text/plain;charset=UTF-8"
    );
    let comments: Vec<&str> = plain.body.lines().filter(|l| l.starts_with('#')).collect();
    assert!(comments.iter().any(|l| l.contains("example.org")));
    assert!(comments.iter().any(|l| l.contains("Snikket")));
    let contacts: Vec<&str> = plain
        .body
        .lines()
        .filter(|l| l.starts_with("Contact: "))
        .collect();
    assert_eq!(
        contacts,
        [
            "Contact: https://example.org/policies/",
            "Contact: https://snikket.org/security/"
        ]
    );
    let set = get(
        &app_with_policies("http://127.0.0.1:9"),
        "/.well-known/security.txt",
        &[],
    )
    .await;
    assert_eq!(set.status, StatusCode::OK);
    assert_eq!(
        set.headers[header::CONTENT_TYPE],
        "text/plain;charset=UTF-8"
    );
    let contacts: Vec<&str> = set
        .body
        .lines()
        .filter(|l| l.starts_with("Contact: "))
        .collect();
    assert_eq!(
        contacts,
        [
            "Contact: mailto:security@example.org",
            "Contact: https://snikket.org/security/"
        ]
    );
}

#[tokio::test]
async fn about_page_shows_versions_and_the_server_version_to_admins() {
    let fake = Fake::default();
    let app = app(&start_fake(fake.clone()).await);
    let anon = get(&app, "/meta/about.html", &[]).await;
    assert_eq!(anon.status, StatusCode::OK);
    assert!(anon.headers[header::CONTENT_TYPE]
        .to_str()
        .expect("ascii")
        .starts_with("text/html"));
    for text in [
        "About this Service",
        "Test Chat",
        "href=\"/policies/\"",
        "AGPL-3.0+",
        "Software Versions",
        "Domain: example.org",
        &format!("Web Portal ({})", env!("CARGO_PKG_VERSION")),
    ] {
        assert!(anon.body.contains(text), "{text} missing: {}", anon.body);
    }
    assert!(!anon.body.contains("9.8.7-test"));
    let (bob, _) = login(&app, "bob", "bob password").await;
    let b = get(&app, "/meta/about.html", &bob).await;
    assert_eq!(b.status, StatusCode::OK);
    assert!(!b.body.contains("9.8.7-test"));
    assert!(fake.take_calls().is_empty());
    let (alice, _) = login(&app, "alice", "alice password").await;
    let a = get(&app, "/meta/about.html", &alice).await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(a.body.contains("(9.8.7-test)"), "{}", a.body);
    assert_eq!(fake.take_calls(), ["get_server_info"]);
    // Every page links the about page.
    assert!(get(&app, "/login", &[])
        .await
        .body
        .contains("href=\"/meta/about.html\""));
}

#[tokio::test]
async fn index_redirects_and_webmanifest() {
    let app = app("http://127.0.0.1:9");
    for path in ["/-", "/invite/-"] {
        let p = get(&app, path, &[]).await;
        assert_eq!(p.status, StatusCode::SEE_OTHER, "{path}");
        assert_eq!(p.location(), "/", "{path}");
    }
    let m = get(&app, "/site.webmanifest", &[]).await;
    assert_eq!(m.status, StatusCode::OK);
    assert_eq!(m.headers[header::CONTENT_TYPE], "application/manifest+json");
    let v: serde_json::Value = serde_json::from_str(&m.body).expect("json manifest");
    assert_eq!(v["name"], "Snikket");
    assert_eq!(v["short_name"], "Snikket");
    assert_eq!(v["theme_color"], "#fbfdff");
    assert_eq!(v["background_color"], "#fbfdff");
    let icons: Vec<(String, String)> = v["icons"]
        .as_array()
        .expect("icons")
        .iter()
        .map(|i| {
            assert_eq!(i["type"], "image/png");
            (
                i["src"].as_str().unwrap_or("").to_string(),
                i["sizes"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(
        icons,
        [192, 256, 512]
            .iter()
            .map(|n| (
                format!("/static/img/android-chrome-{n}x{n}.png"),
                format!("{n}x{n}")
            ))
            .collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn profile_page() {
    let fake = Fake::default();
    let app = app(&start_fake(fake.clone()).await);
    // Anonymous visitors are sent to the login page, both ways, and nothing is called.
    let anon = get(&app, "/user/profile", &[]).await;
    assert_eq!(anon.status, StatusCode::SEE_OTHER);
    assert_eq!(anon.location(), "/login");
    let anon_post = post(&app, "/user/profile", &[], &[("nickname", "x")]).await;
    assert_eq!(anon_post.status, StatusCode::SEE_OTHER);
    assert_eq!(anon_post.location(), "/login");
    assert!(fake.take_calls().is_empty());

    let (carol, csrf) = login(&app, "carol", "carol password").await;
    let dash = get(&app, "/user/", &carol).await;
    assert!(
        dash.body.contains("href=\"/user/profile\""),
        "{}",
        dash.body
    );
    let page = get(&app, "/user/profile", &carol).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(page.body.contains("Display name"));
    assert!(page.body.contains("placeholder=\"carol\""));
    // Prefilled from GetProfile, escaped.
    assert!(
        page.body.contains("value=\"Carol &lt;C&gt;\""),
        "{}",
        page.body
    );
    assert!(page.body.contains("type=\"file\""));
    assert!(
        page.body.contains("value=\"presence\" checked"),
        "{}",
        page.body
    );
    // The avatar link (HTML-escaped): base64url of the JID and of the hash's first 8 bytes.
    assert!(
        page.body
            .contains("&#x2f;avatar&#x2f;Y2Fyb2xAZXhhbXBsZS5vcmc&#x2f;ABEiM0RVZnc"),
        "{}",
        page.body
    );
    assert!(!page.body.contains("Profile updated"));

    // Without or with a wrong CSRF token: refused, no backend call.
    for form in [
        vec![("nickname", "Mallory")],
        vec![("csrf", "forged"), ("nickname", "Mallory")],
    ] {
        let r = post(&app, "/user/profile", &carol, &form).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
    }
    assert!(fake.take_changes().is_empty());

    let ok = post(
        &app,
        "/user/profile",
        &carol,
        &[("csrf", &csrf), ("nickname", "Caroline & co")],
    )
    .await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER, "{}", ok.body);
    assert_eq!(ok.location(), "/user/profile?done=updated");
    assert_eq!(
        fake.take_changes(),
        ["update_profile carol nickname=Caroline & co access= avatar=:"]
    );
    let after = get(&app, ok.location(), &carol).await;
    assert_eq!(after.status, StatusCode::OK);
    assert!(after.body.contains("Profile updated"));

    // The real form is multipart, with the avatar file and the visibility.
    let multipart = |csrf: &str, file: &[u8]| {
        multipart_post(
            "/user/profile",
            &carol,
            &[
                ("csrf", csrf),
                ("nickname", "Caro"),
                ("profile_access_model", "open"),
            ],
            ("avatar", "image/png", file),
        )
    };
    let r = call(&app, multipart("forged", b"PNG")).await;
    assert_eq!(
        r.status,
        StatusCode::BAD_REQUEST,
        "CSRF checked for multipart too"
    );
    assert!(fake.take_changes().is_empty());
    let r = call(&app, multipart(&csrf, b"PNG")).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert_eq!(
        fake.take_changes(),
        ["update_profile carol nickname=Caro access=open avatar=image/png:PNG"]
    );
    let big = vec![b'x'; 1024 * 1024 + 1];
    let r = call(&app, multipart(&csrf, &big)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.body.contains("The chosen avatar is too big"),
        "{}",
        r.body
    );

    // The avatar endpoint: the image with an ETag, 304 when it matches, 404 otherwise.
    let img = get(&app, "/avatar/Y2Fyb2xAZXhhbXBsZS5vcmc/ABEiM0RVZnc", &carol).await;
    assert_eq!(img.status, StatusCode::OK);
    assert_eq!(img.body, "PNGDATA");
    assert_eq!(img.headers[header::CONTENT_TYPE], "image/png");
    let etag = img.headers[header::ETAG].to_str().unwrap().to_string();
    let again = Request::get("/avatar/Y2Fyb2xAZXhhbXBsZS5vcmc/x")
        .header(header::COOKIE, carol.join("; "))
        .header(header::IF_NONE_MATCH, &etag)
        .body(Body::empty())
        .expect("request");
    assert_eq!(call(&app, again).await.status, StatusCode::NOT_MODIFIED);
    let other = get(&app, "/avatar/Ym9iQGV4YW1wbGUub3Jn/x", &carol).await;
    assert_eq!(other.status, StatusCode::NOT_FOUND);
    let nobody = get(&app, "/avatar/Y2Fyb2xAZXhhbXBsZS5vcmc/x", &[]).await;
    assert_eq!(nobody.status, StatusCode::SEE_OTHER, "signed-in users only");
}

#[tokio::test]
async fn account_data_export_and_import() {
    let fake = Fake::default();
    let app = app(&start_fake(fake.clone()).await);
    assert_eq!(
        get(&app, "/user/manage_data", &[]).await.status,
        StatusCode::SEE_OTHER
    );
    let (alice, csrf) = login(&app, "alice", "alice password").await;
    let page = get(&app, "/user/manage_data", &alice).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("Export account"), "{}", page.body);
    assert!(get(&app, "/user/", &alice)
        .await
        .body
        .contains("/user/manage_data"));
    // CSRF checked; an account with nothing gets the notice instead of a file.
    let forged = post(&app, "/user/manage_data", &alice, &[("csrf", "forged")]).await;
    assert_eq!(forged.status, StatusCode::BAD_REQUEST);
    let empty = post(&app, "/user/manage_data", &alice, &[("csrf", &csrf)]).await;
    assert_eq!(empty.status, StatusCode::OK);
    assert!(
        empty
            .body
            .contains("You currently have no account data to export."),
        "{}",
        empty.body
    );

    // A file download, named after the account.
    let (carol, csrf) = login(&app, "carol", "carol password").await;
    let file = post(&app, "/user/manage_data", &carol, &[("csrf", &csrf)]).await;
    assert_eq!(file.status, StatusCode::OK);
    assert_eq!(
        file.headers[header::CONTENT_TYPE],
        "application/xml; charset=utf-8"
    );
    assert_eq!(
        file.headers[header::CONTENT_DISPOSITION],
        "attachment; filename=\"account-data.xml\"; filename*=UTF-8''account-data-carol%40example.org.xml"
    );
    assert_eq!(file.body, "<server-data xmlns='urn:xmpp:pie:0'/>");

    // Import on the registration success page: checked type, size and format.
    let page = get(&app, "/invite/success", &carol).await;
    assert!(page.body.contains("Moving to Snikket?"), "{}", page.body);
    let xml = b"<server-data xmlns='urn:xmpp:pie:0'><host jid='old.example'><user name='c'/></host></server-data>";
    let upload = |csrf: &str, mime: &str, bytes: &[u8]| {
        multipart_post(
            "/invite/success",
            &carol,
            &[("csrf", csrf)],
            ("account_data_file", mime, bytes),
        )
    };
    assert_eq!(
        call(&app, upload("forged", "text/xml", xml)).await.status,
        StatusCode::BAD_REQUEST
    );
    let wrong_type = call(&app, upload(&csrf, "image/png", xml)).await;
    assert_eq!(wrong_type.status, StatusCode::BAD_REQUEST);
    assert!(
        wrong_type.body.contains("unknown format") && wrong_type.body.contains("image&#x2f;png"),
        "{}",
        wrong_type.body
    );
    let not_pie = call(&app, upload(&csrf, "application/xml", b"<other/>")).await;
    assert_eq!(not_pie.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        not_pie.body.contains("not in XEP-0227 format"),
        "{}",
        not_pie.body
    );
    let big = vec![b' '; 5 * 1024 * 1024 + 1];
    let too_big = call(&app, upload(&csrf, "text/xml", &big)).await;
    assert_eq!(too_big.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(
        too_big.body.contains("too large to upload"),
        "{}",
        too_big.body
    );
    assert!(fake.take_changes().is_empty());
    let ok = call(&app, upload(&csrf, "text/xml", xml)).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
    assert!(ok.body.contains("Import successful"), "{}", ok.body);
    assert_eq!(
        fake.take_changes(),
        [format!("import_account_data carol {}", xml.len())]
    );
}
