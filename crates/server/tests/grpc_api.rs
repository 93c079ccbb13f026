//! The admin gRPC API of the real `snikket-server` binary through a tonic client over loopback:
//! authentication, permissions, every call's happy path and its main error.
#![allow(clippy::unwrap_used)] // A test panics on an unexpected error by design.

use snikket_rpc::snikket::admin::v1 as pb;
use snikket_rpc::tonic::{
    self, metadata::MetadataValue, service::interceptor::InterceptedService, transport::Channel,
    Code, Request, Status,
};
use snikket_store::{Credential, Role, Store};
use snikket_testkit::db::{backends, Backend, TestDb};
use snikket_testkit::net::free_port;
use snikket_testkit::process::Child;
use snikket_xmpp::scram::{ScramHash, StoredCredentials};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_snikket-server");
const DOMAIN: &str = "chat.example.com";

/// Adds the internal secret and, when set, the session token to every call.
#[derive(Clone)]
struct Creds {
    secret: String,
    session: Option<String>,
}

impl tonic::service::Interceptor for Creds {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        let secret: MetadataValue<_> = format!("Bearer {}", self.secret)
            .parse()
            .map_err(|_| Status::internal("bad secret"))?;
        req.metadata_mut().insert("authorization", secret);
        if let Some(s) = &self.session {
            let v: MetadataValue<_> = s.parse().map_err(|_| Status::internal("bad token"))?;
            req.metadata_mut().insert("x-snikket-session", v);
        }
        Ok(req)
    }
}

type Svc = InterceptedService<Channel, Creds>;

/// One client per service, all sending the same credentials.
struct Api {
    auth: pb::auth_client::AuthClient<Svc>,
    users: pb::users_client::UsersClient<Svc>,
    invites: pb::invitations_client::InvitationsClient<Svc>,
    circles: pb::circles_client::CirclesClient<Svc>,
    system: pb::system_client::SystemClient<Svc>,
    profile: pb::profile_client::ProfileClient<Svc>,
}

impl Api {
    fn new(channel: &Channel, secret: &str, session: Option<&str>) -> Api {
        let c = Creds {
            secret: secret.to_string(),
            session: session.map(str::to_string),
        };
        Api {
            auth: pb::auth_client::AuthClient::with_interceptor(channel.clone(), c.clone()),
            users: pb::users_client::UsersClient::with_interceptor(channel.clone(), c.clone()),
            invites: pb::invitations_client::InvitationsClient::with_interceptor(
                channel.clone(),
                c.clone(),
            ),
            circles: pb::circles_client::CirclesClient::with_interceptor(
                channel.clone(),
                c.clone(),
            ),
            system: pb::system_client::SystemClient::with_interceptor(channel.clone(), c.clone()),
            profile: pb::profile_client::ProfileClient::with_interceptor(channel.clone(), c),
        }
    }
}

/// Asserts a failed call's code and stable reason (metadata and message prefix).
#[track_caller]
fn assert_reason<T: std::fmt::Debug>(
    r: Result<tonic::Response<T>, Status>,
    code: Code,
    reason: &str,
) {
    let status = r.expect_err("call should fail");
    assert_eq!(status.code(), code, "{status:?}");
    assert_eq!(
        status
            .metadata()
            .get("x-snikket-reason")
            .and_then(|v| v.to_str().ok()),
        Some(reason),
        "{status:?}"
    );
    assert!(
        status.message().starts_with(&format!("{reason}: ")),
        "{status:?}"
    );
}

fn credentials(password: &str) -> Vec<Credential> {
    [
        (ScramHash::Sha1, "SCRAM-SHA-1"),
        (ScramHash::Sha256, "SCRAM-SHA-256"),
    ]
    .into_iter()
    .map(|(hash, mechanism)| {
        let c = StoredCredentials::new_random(hash, password).unwrap();
        Credential {
            mechanism: mechanism.to_string(),
            salt: c.salt,
            iterations: c.iterations,
            stored_key: c.stored_key,
            server_key: c.server_key,
        }
    })
    .collect()
}

/// Opens the database the server uses: its SQLite file, or the PostgreSQL test database.
async fn open_store(data: &Path, pg_url: Option<&str>) -> Store {
    if let Some(url) = pg_url {
        return Store::open_url(url).await.unwrap();
    }
    std::fs::create_dir_all(data.join("server")).unwrap();
    Store::open_url(&format!(
        "sqlite://{}",
        data.join("server/snikket.sqlite").display()
    ))
    .await
    .unwrap()
}

/// Starts the binary and waits (bounded) until its gRPC port answers.
async fn start_server(data: &Path, pg_url: Option<&str>) -> (Child, Channel, String, u16) {
    let grpc_port = free_port();
    let mut cmd = Command::new(BIN);
    cmd.env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("SNIKKET_DOMAIN", DOMAIN)
        .env("SNIKKET_ADMIN_EMAIL", "admin@example.com")
        .env("SNIKKET_SITE_NAME", "The Family")
        .env("SNIKKET_LOGLEVEL", "warn")
        .env("SNIKKET_TWEAK_DATA_DIR", data)
        .env("SNIKKET_TWEAK_BIND_INTERFACES", "127.0.0.1")
        .env("SNIKKET_TWEAK_SERVER_GRPC_PORT", grpc_port.to_string())
        .env("SNIKKET_TWEAK_INTERNAL_HTTP_PORT", free_port().to_string())
        .env("SNIKKET_TWEAK_INTERNAL_HTTP_INTERFACE", "127.0.0.1")
        .env("SNIKKET_TWEAK_C2S_PORT", free_port().to_string())
        .env("SNIKKET_TWEAK_S2S_PORT", free_port().to_string())
        .env("SNIKKET_TWEAK_C2S_DIRECT_TLS_PORT", free_port().to_string())
        .env("SNIKKET_TWEAK_S2S_PORT", free_port().to_string())
        .env("SNIKKET_PROXY65_PORT", free_port().to_string());
    if let Some(url) = pg_url {
        cmd.env("SNIKKET_TWEAK_DATABASE_URL", url);
    }
    let mut child = Child::spawn("snikket-server", cmd);
    let deadline = Instant::now() + Duration::from_secs(60);
    let secret_path = data.join("internal/grpc-secret");
    loop {
        assert!(child.try_wait().is_none(), "snikket-server exited early");
        assert!(Instant::now() < deadline, "server not ready within 60 s");
        if let Ok(secret) = std::fs::read_to_string(&secret_path) {
            let endpoint = Channel::from_shared(format!("http://127.0.0.1:{grpc_port}"))
                .unwrap()
                .connect_timeout(Duration::from_secs(2))
                .timeout(Duration::from_secs(30));
            if let Ok(channel) = endpoint.connect().await {
                return (child, channel, secret.trim().to_string(), grpc_port);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn login(api: &mut Api, user: &str, password: &str) -> pb::LoginResponse {
    api.auth
        .login(pb::LoginRequest {
            username: user.into(),
            password: password.into(),
        })
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_end_to_end_on_every_backend() {
    for backend in backends() {
        let db = TestDb::create(backend).await;
        let pg_url = (backend == Backend::Postgres).then_some(db.url.as_str());
        scenario(pg_url).await;
    }
}

async fn scenario(pg_url: Option<&str>) {
    let dir = snikket_testkit::temp_dir();
    let data = dir.path();
    // The first accounts go straight into the database the server will open.
    {
        let store = open_store(data, pg_url).await;
        store
            .create_account("root", Role::Admin, &credentials("root password 1"), None)
            .await
            .unwrap();
        store
            .create_account("bob", Role::Normal, &credentials("bob password 1"), None)
            .await
            .unwrap();
        store
            .create_account("lim", Role::Limited, &credentials("lim password 1"), None)
            .await
            .unwrap();
        store.close().await;
    }
    let (server, channel, secret, _port) = start_server(data, pg_url).await;
    let store = open_store(data, pg_url).await;

    // --- Authentication -------------------------------------------------------------------
    let mut anon = Api::new(&channel, &secret, None);
    let mut wrong_secret = Api::new(&channel, "not-the-secret", None);
    let r = wrong_secret
        .auth
        .login(pb::LoginRequest {
            username: "root".into(),
            password: "root password 1".into(),
        })
        .await;
    assert_eq!(r.unwrap_err().code(), Code::Unauthenticated);
    assert_reason(
        anon.auth
            .login(pb::LoginRequest {
                username: "root".into(),
                password: "wrong".into(),
            })
            .await,
        Code::Unauthenticated,
        "invalid-credentials",
    );
    assert_reason(
        anon.auth
            .login(pb::LoginRequest {
                username: "ghost".into(),
                password: "root password 1".into(),
            })
            .await,
        Code::Unauthenticated,
        "invalid-credentials",
    );
    assert_reason(
        anon.users.list_users(pb::ListUsersRequest {}).await,
        Code::Unauthenticated,
        "session-invalid",
    );
    let admin_login = login(&mut anon, "Root@chat.example.com", "root password 1").await;
    assert_eq!(admin_login.username, "root");
    assert_eq!(admin_login.jid, "root@chat.example.com");
    assert_eq!(admin_login.role, pb::Role::Admin as i32);
    assert_eq!(admin_login.scopes, vec!["prosody:admin".to_string()]);
    assert!(admin_login.expires_at > snikket_store::now() + 86_000);
    let mut admin = Api::new(&channel, &secret, Some(&admin_login.session_token));
    // The right session with the wrong internal secret is still refused.
    let mut mixed = Api::new(&channel, "nope", Some(&admin_login.session_token));
    assert_eq!(
        mixed
            .users
            .list_users(pb::ListUsersRequest {})
            .await
            .unwrap_err()
            .code(),
        Code::Unauthenticated
    );
    // Expired and unknown sessions.
    let expired = store.create_portal_session("root", -1).await.unwrap();
    let mut stale = Api::new(&channel, &secret, Some(&expired.token));
    assert_reason(
        stale.users.list_users(pb::ListUsersRequest {}).await,
        Code::Unauthenticated,
        "session-invalid",
    );
    let mut guessed = Api::new(
        &channel,
        &secret,
        Some("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
    );
    assert_reason(
        guessed.profile.get_profile(pb::GetProfileRequest {}).await,
        Code::Unauthenticated,
        "session-invalid",
    );

    // --- Permissions ----------------------------------------------------------------------
    let bob_login = login(&mut anon, "bob", "bob password 1").await;
    assert_eq!(bob_login.scopes, vec!["prosody:registered".to_string()]);
    let mut bob = Api::new(&channel, &secret, Some(&bob_login.session_token));
    assert_reason(
        bob.users.list_users(pb::ListUsersRequest {}).await,
        Code::PermissionDenied,
        "permission-denied",
    );
    assert_reason(
        bob.circles.list_circles(pb::ListCirclesRequest {}).await,
        Code::PermissionDenied,
        "permission-denied",
    );
    assert_reason(
        bob.system
            .get_server_info(pb::GetServerInfoRequest {})
            .await,
        Code::PermissionDenied,
        "permission-denied",
    );
    assert_reason(
        bob.invites
            .list_invitations(pb::ListInvitationsRequest::default())
            .await,
        Code::PermissionDenied,
        "permission-denied",
    );
    assert_reason(
        bob.invites
            .create_invitation(pb::CreateInvitationRequest {
                kind: pb::InvitationKind::Account as i32,
                ..Default::default()
            })
            .await,
        Code::PermissionDenied,
        "permission-denied",
    );
    // A normal user may create a contact invitation, which joins the default circle.
    let contact = bob
        .invites
        .create_invitation(pb::CreateInvitationRequest {
            kind: pb::InvitationKind::Contact as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(contact.kind, pb::InvitationKind::Contact as i32);
    assert_eq!(contact.circles, vec!["default".to_string()]);
    assert_eq!(contact.inviter, "bob");
    assert_eq!(
        contact.xmpp_uri,
        format!("xmpp:bob@{DOMAIN}?roster;preauth={};ibr=y", contact.token)
    );
    let lim_login = login(&mut anon, "lim", "lim password 1").await;
    let mut lim = Api::new(&channel, &secret, Some(&lim_login.session_token));
    assert_reason(
        lim.invites
            .create_invitation(pb::CreateInvitationRequest {
                kind: pb::InvitationKind::Contact as i32,
                ..Default::default()
            })
            .await,
        Code::PermissionDenied,
        "permission-denied",
    );

    // --- Users ----------------------------------------------------------------------------
    let list = admin
        .users
        .list_users(pb::ListUsersRequest {})
        .await
        .unwrap()
        .into_inner();
    let names: Vec<_> = list.users.iter().map(|u| u.username.as_str()).collect();
    assert_eq!(names, ["bob", "lim", "root"]);
    assert!(
        list.users[2].last_active_at.is_some(),
        "login records activity"
    );
    assert_eq!(list.users[1].role, pb::Role::Limited as i32);
    let got = admin
        .users
        .get_user(pb::GetUserRequest {
            username: "bob".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.jid, "bob@chat.example.com");
    assert_eq!(got.state, pb::AccountState::Active as i32);
    assert_reason(
        admin
            .users
            .get_user(pb::GetUserRequest {
                username: "ghost".into(),
            })
            .await,
        Code::NotFound,
        "user-not-found",
    );
    let updated = admin
        .users
        .update_user(pb::UpdateUserRequest {
            username: "bob".into(),
            display_name: Some("Bobby".into()),
            role: pb::Role::Limited as i32,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(updated.display_name, "Bobby");
    assert_eq!(updated.role, pb::Role::Limited as i32);
    // The demotion applies to bob's open session at once.
    assert_reason(
        bob.invites
            .create_invitation(pb::CreateInvitationRequest {
                kind: pb::InvitationKind::Contact as i32,
                ..Default::default()
            })
            .await,
        Code::PermissionDenied,
        "permission-denied",
    );
    assert_reason(
        admin
            .users
            .update_user(pb::UpdateUserRequest {
                username: "ghost".into(),
                display_name: None,
                role: pb::Role::Admin as i32,
            })
            .await,
        Code::NotFound,
        "user-not-found",
    );
    // The last admin cannot be demoted, locked or deleted.
    for role in [pb::Role::Normal, pb::Role::Limited] {
        assert_reason(
            admin
                .users
                .update_user(pb::UpdateUserRequest {
                    username: "root".into(),
                    display_name: None,
                    role: role as i32,
                })
                .await,
            Code::FailedPrecondition,
            "cannot-remove-only-admin",
        );
    }
    assert_reason(
        admin
            .users
            .lock_user(pb::LockUserRequest {
                username: "root".into(),
            })
            .await,
        Code::FailedPrecondition,
        "cannot-remove-only-admin",
    );
    assert_reason(
        admin
            .users
            .delete_user(pb::DeleteUserRequest {
                username: "root".into(),
            })
            .await,
        Code::FailedPrecondition,
        "cannot-remove-only-admin",
    );
    assert_eq!(
        store.account("root").await.unwrap().unwrap().role,
        Role::Admin
    );
    // Locking ends the user's sessions and login; unlocking and restoring bring them back.
    let locked = admin
        .users
        .lock_user(pb::LockUserRequest {
            username: "bob".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(locked.state, pb::AccountState::Locked as i32);
    assert_reason(
        bob.profile.get_profile(pb::GetProfileRequest {}).await,
        Code::Unauthenticated,
        "session-invalid",
    );
    assert_reason(
        anon.auth
            .login(pb::LoginRequest {
                username: "bob".into(),
                password: "bob password 1".into(),
            })
            .await,
        Code::PermissionDenied,
        "account-disabled",
    );
    let unlocked = admin
        .users
        .unlock_user(pb::UnlockUserRequest {
            username: "bob".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(unlocked.state, pb::AccountState::Active as i32);
    store
        .set_account_state("bob", snikket_store::AccountState::PendingDeletion)
        .await
        .unwrap();
    let pending = admin
        .users
        .get_user(pb::GetUserRequest {
            username: "bob".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(pending.state, pb::AccountState::PendingDeletion as i32);
    let requested = pending.deletion_requested_at.expect("deletion time");
    assert_eq!(pending.pending_until, Some(requested + 7 * 86_400));
    let restored = admin
        .users
        .restore_user(pb::RestoreUserRequest {
            username: "bob".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(restored.state, pb::AccountState::Active as i32);
    assert_eq!(restored.deletion_requested_at, None);
    assert_reason(
        admin
            .users
            .unlock_user(pb::UnlockUserRequest {
                username: "ghost".into(),
            })
            .await,
        Code::NotFound,
        "user-not-found",
    );
    assert_reason(
        admin
            .users
            .restore_user(pb::RestoreUserRequest {
                username: "ghost".into(),
            })
            .await,
        Code::NotFound,
        "user-not-found",
    );
    // Password reset link.
    let reset = admin
        .users
        .create_password_reset(pb::CreatePasswordResetRequest {
            username: "bob".into(),
            ttl_seconds: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reset.kind, pb::InvitationKind::PasswordReset as i32);
    assert_eq!(reset.username, "bob");
    assert_eq!(reset.expires_at - reset.created_at, 86_400);
    assert_eq!(
        reset.xmpp_uri,
        format!("xmpp:bob@{DOMAIN}?register;preauth={}", reset.token)
    );
    assert_eq!(
        reset.landing_url,
        format!("https://{DOMAIN}/invite/{}/", reset.token)
    );
    assert_reason(
        admin
            .users
            .create_password_reset(pb::CreatePasswordResetRequest {
                username: "ghost".into(),
                ttl_seconds: 0,
            })
            .await,
        Code::NotFound,
        "user-not-found",
    );
    // Debug info: push registrations and OMEMO devices come from what bob's clients stored.
    store
        .push_enable(
            "bob",
            &snikket_store::new_registration(
                "push.example.net",
                "device-node-secret",
                "",
                "Snikket.abc",
            ),
            5,
        )
        .await
        .unwrap();
    for (node, id, payload) in [
        (
            "eu.siacs.conversations.axolotl.devicelist",
            "current",
            "<list xmlns='eu.siacs.conversations.axolotl'><device id='1111'/><device id='2222'/></list>",
        ),
        (
            "eu.siacs.conversations.axolotl.bundles:1111",
            "current",
            "<bundle xmlns='eu.siacs.conversations.axolotl'/>",
        ),
    ] {
        let node = snikket_store::PepNode {
            node: node.into(),
            access_model: "open".into(),
            max_items: 1,
        };
        store.pep_put_node("bob", &node).await.unwrap();
        store.pep_publish("bob", &node, id, payload).await.unwrap();
    }
    let debug = admin
        .users
        .get_user_debug_info(pb::GetUserDebugInfoRequest {
            username: "bob".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(debug.user.unwrap().username, "bob");
    assert!(debug.sessions.is_empty());
    assert_eq!(debug.push_registrations.len(), 1);
    let reg = &debug.push_registrations[0];
    assert_eq!(reg.service, "push.example.net");
    assert_eq!(reg.client_id, "Snikket.abc");
    assert!(
        !reg.node.contains("secret"),
        "the node is abbreviated: {}",
        reg.node
    );
    let omemo = debug.omemo.unwrap();
    assert!(omemo.valid);
    let devices: Vec<(u32, bool)> = omemo
        .devices
        .iter()
        .map(|d| (d.id, d.have_bundle))
        .collect();
    assert_eq!(devices, [(1111, true), (2222, false)]);

    // XEP-0227: bob's data (his OMEMO nodes) exported, imported into lim's account, exported again.
    // (Locking bob above ended his portal sessions.)
    let bob_login = login(&mut anon, "bob", "bob password 1").await;
    let mut bob = Api::new(&channel, &secret, Some(&bob_login.session_token));
    let export = bob
        .profile
        .export_account_data(pb::ExportAccountDataRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(!export.empty);
    assert_eq!(export.jid, format!("bob@{DOMAIN}"));
    let doc = String::from_utf8(export.xml).unwrap();
    assert!(
        doc.starts_with(
            "<?xml version='1.0' encoding='UTF-8'?>\n<server-data xmlns='urn:xmpp:pie:0'"
        ),
        "{doc}"
    );
    assert!(doc.contains("<user name='bob'"), "{doc}");
    assert!(
        doc.contains("eu.siacs.conversations.axolotl.devicelist"),
        "{doc}"
    );
    assert!(doc.contains("device id='2222'"), "{doc}");
    let before = lim
        .profile
        .export_account_data(pb::ExportAccountDataRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(!String::from_utf8_lossy(&before.xml).contains("axolotl"));
    // Plus what another server's export would carry: a roster and a legacy vCard.
    let doc = doc.replace(
        "<user name='bob'>",
        "<user name='bob'><query xmlns='jabber:iq:roster'>\
         <item jid='friend@elsewhere.example' name='Old Friend' subscription='both'><group>Old</group></item>\
         <item jid='not a jid@@' subscription='both'/></query>\
         <vCard xmlns='vcard-temp'><FN>Lim Imported</FN></vCard>",
    );
    let imported = lim
        .profile
        .import_account_data(pb::ImportAccountDataRequest {
            xml: doc.clone().into_bytes(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (
            imported.roster_items,
            imported.vcard,
            imported.pep_nodes,
            imported.pep_items,
            imported.skipped
        ),
        (1, true, 2, 2, 1),
        "{imported:?}"
    );
    let after = lim
        .profile
        .export_account_data(pb::ExportAccountDataRequest {})
        .await
        .unwrap()
        .into_inner();
    let after = String::from_utf8(after.xml).unwrap();
    assert!(after.contains("<user name='lim'"), "{after}");
    assert!(after.contains("device id='2222'"), "{after}");
    assert!(after.contains("jid='friend@elsewhere.example'"), "{after}");
    assert!(after.contains("<FN>Lim Imported</FN>"), "{after}");
    for bad in [
        "<not-xml",
        "<server-data xmlns='urn:xmpp:pie:0'/>",
        "<other/>",
    ] {
        assert_reason(
            lim.profile
                .import_account_data(pb::ImportAccountDataRequest {
                    xml: bad.as_bytes().to_vec(),
                })
                .await,
            Code::InvalidArgument,
            "not-xep227",
        );
    }
    assert_reason(
        admin
            .users
            .get_user_debug_info(pb::GetUserDebugInfoRequest {
                username: "ghost".into(),
            })
            .await,
        Code::NotFound,
        "user-not-found",
    );

    // --- Circles --------------------------------------------------------------------------
    let circles = admin
        .circles
        .list_circles(pb::ListCirclesRequest {})
        .await
        .unwrap()
        .into_inner()
        .circles;
    assert_eq!(circles.len(), 1);
    assert!(circles[0].is_default);
    assert_eq!(circles[0].name, "The Family");
    let friends = admin
        .circles
        .create_circle(pb::CreateCircleRequest {
            name: " Friends ".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(friends.name, "Friends");
    assert_eq!(friends.id.len(), 12);
    assert_reason(
        admin
            .circles
            .create_circle(pb::CreateCircleRequest { name: "  ".into() })
            .await,
        Code::InvalidArgument,
        "group-name-required",
    );
    let renamed = admin
        .circles
        .rename_circle(pb::RenameCircleRequest {
            id: friends.id.clone(),
            name: "Pals".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(renamed.name, "Pals");
    assert_reason(
        admin
            .circles
            .rename_circle(pb::RenameCircleRequest {
                id: "default".into(),
                name: "Other".into(),
            })
            .await,
        Code::FailedPrecondition,
        "default-circle-protected",
    );
    assert_reason(
        admin
            .circles
            .delete_circle(pb::DeleteCircleRequest {
                id: "default".into(),
            })
            .await,
        Code::FailedPrecondition,
        "default-circle-protected",
    );
    assert_reason(
        admin
            .circles
            .get_circle(pb::GetCircleRequest { id: "nope".into() })
            .await,
        Code::NotFound,
        "group-not-found",
    );
    let with_members = admin
        .circles
        .add_circle_member(pb::AddCircleMemberRequest {
            id: friends.id.clone(),
            username: "bob".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(with_members.members, vec!["bob".to_string()]);
    admin
        .circles
        .add_circle_member(pb::AddCircleMemberRequest {
            id: friends.id.clone(),
            username: "lim".into(),
        })
        .await
        .unwrap();
    assert_reason(
        admin
            .circles
            .add_circle_member(pb::AddCircleMemberRequest {
                id: friends.id.clone(),
                username: "ghost".into(),
            })
            .await,
        Code::NotFound,
        "user-not-found",
    );
    assert_reason(
        admin
            .circles
            .add_circle_member(pb::AddCircleMemberRequest {
                id: "nope".into(),
                username: "bob".into(),
            })
            .await,
        Code::NotFound,
        "group-not-found",
    );
    let after_removal = admin
        .circles
        .remove_circle_member(pb::RemoveCircleMemberRequest {
            id: friends.id.clone(),
            username: "lim".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(after_removal.members, vec!["bob".to_string()]);
    assert_reason(
        admin
            .circles
            .remove_circle_member(pb::RemoveCircleMemberRequest {
                id: friends.id.clone(),
                username: "lim".into(),
            })
            .await,
        Code::NotFound,
        "user-not-found",
    );
    let chat = admin
        .circles
        .add_circle_chat(pb::AddCircleChatRequest {
            id: friends.id.clone(),
            name: "Pals chat".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(chat.jid, format!("{}@groups.{DOMAIN}", chat.id));
    assert_eq!(chat.name, "Pals chat");
    assert_reason(
        admin
            .circles
            .add_circle_chat(pb::AddCircleChatRequest {
                id: "nope".into(),
                name: "X".into(),
            })
            .await,
        Code::NotFound,
        "group-not-found",
    );
    let got = admin
        .circles
        .get_circle(pb::GetCircleRequest {
            id: friends.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.chats, vec![chat.clone()]);
    let no_chat = admin
        .circles
        .remove_circle_chat(pb::RemoveCircleChatRequest {
            id: friends.id.clone(),
            chat_id: chat.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(no_chat.chats.is_empty());
    assert_reason(
        admin
            .circles
            .remove_circle_chat(pb::RemoveCircleChatRequest {
                id: friends.id.clone(),
                chat_id: chat.id.clone(),
            })
            .await,
        Code::NotFound,
        "chat-not-found",
    );
    let bob_user = admin
        .users
        .get_user(pb::GetUserRequest {
            username: "bob".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(bob_user.circles, vec![friends.id.clone()]);

    // --- Invitations ----------------------------------------------------------------------
    let group = admin
        .invites
        .create_invitation(pb::CreateInvitationRequest {
            kind: pb::InvitationKind::Group as i32,
            role: pb::Role::Admin as i32,
            circles: vec![friends.id.clone()],
            note: "for the cousins".into(),
            ttl_seconds: 3600,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(group.reusable);
    assert_eq!(group.role, pb::Role::Admin as i32);
    assert_eq!(group.expires_at - group.created_at, 3600);
    assert_eq!(group.note, "for the cousins");
    assert_eq!(group.source, "root@chat.example.com/admin_api");
    assert_eq!(
        group.xmpp_uri,
        format!("xmpp:{DOMAIN}?register;preauth={}", group.token)
    );
    let account = admin
        .invites
        .create_invitation(pb::CreateInvitationRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(!account.reusable);
    assert_eq!(account.kind, pb::InvitationKind::Account as i32);
    assert_eq!(account.role, pb::Role::Normal as i32);
    assert_eq!(account.expires_at - account.created_at, 7 * 86_400);
    assert_reason(
        admin
            .invites
            .create_invitation(pb::CreateInvitationRequest {
                circles: vec!["nope".into()],
                ..Default::default()
            })
            .await,
        Code::NotFound,
        "group-not-found",
    );
    assert_reason(
        admin
            .invites
            .create_invitation(pb::CreateInvitationRequest {
                ttl_seconds: 10 * 365 * 86_400,
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "invalid-argument",
    );
    let listed = admin
        .invites
        .list_invitations(pb::ListInvitationsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .invitations;
    let tokens: Vec<_> = listed.iter().map(|i| i.token.as_str()).collect();
    assert!(tokens.contains(&group.token.as_str()));
    assert!(tokens.contains(&account.token.as_str()));
    assert!(tokens.contains(&contact.token.as_str()));
    assert!(!tokens.contains(&reset.token.as_str()), "resets are hidden");
    let with_resets = admin
        .invites
        .list_invitations(pb::ListInvitationsRequest {
            include_password_resets: true,
        })
        .await
        .unwrap()
        .into_inner()
        .invitations;
    assert_eq!(with_resets.len(), listed.len() + 1);
    for id in [group.token.clone(), group.id.clone()] {
        let got = admin
            .invites
            .get_invitation(pb::GetInvitationRequest { id })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(got, group);
    }
    let mut wrong_token = group.token.clone();
    wrong_token.replace_range(20.., "AAAA");
    if wrong_token == group.token {
        wrong_token.replace_range(20.., "BBBB");
    }
    assert_reason(
        admin
            .invites
            .get_invitation(pb::GetInvitationRequest { id: wrong_token })
            .await,
        Code::NotFound,
        "invite-not-found",
    );
    admin
        .invites
        .revoke_invitation(pb::RevokeInvitationRequest {
            id: group.token.clone(),
        })
        .await
        .unwrap();
    assert_reason(
        admin
            .invites
            .get_invitation(pb::GetInvitationRequest {
                id: group.token.clone(),
            })
            .await,
        Code::NotFound,
        "invite-not-found",
    );
    assert_reason(
        admin
            .invites
            .revoke_invitation(pb::RevokeInvitationRequest {
                id: group.token.clone(),
            })
            .await,
        Code::NotFound,
        "invite-not-found",
    );

    // --- System ---------------------------------------------------------------------------
    let info = admin
        .system
        .get_server_info(pb::GetServerInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.version, env!("CARGO_PKG_VERSION"));
    assert_eq!(info.site_name, "The Family");
    assert_eq!(info.domain, DOMAIN);
    assert_eq!(info.users_total, 3);
    assert_eq!(info.active_1d, 3, "root, bob and lim logged in");
    assert_eq!(info.active_30d, 3);
    assert!(info.uptime_seconds >= 0);
    assert_eq!(info.connected_now, Some(0), "no XMPP sessions in this test");
    assert_eq!(info.upload_bytes, Some(0), "no file was shared yet");

    // Announcements (spec 5.5.6): a preview to the admin, then to everyone; offline accounts
    // find it in their offline messages.
    let announce = |api: &mut Api, body: &str, to: pb::AnnouncementRecipients| {
        let mut sys = api.system.clone();
        let req = pb::SendAnnouncementRequest {
            body: body.into(),
            recipients: to as i32,
        };
        async move { sys.send_announcement(req).await }
    };
    let sent = announce(&mut admin, "Preview", pb::AnnouncementRecipients::Preview)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(sent.recipients, 1);
    let sent = announce(
        &mut admin,
        "Online only",
        pb::AnnouncementRecipients::Online,
    )
    .await
    .unwrap()
    .into_inner();
    assert_eq!(sent.recipients, 0);
    let sent = announce(
        &mut admin,
        "Maintenance tonight",
        pb::AnnouncementRecipients::All,
    )
    .await
    .unwrap()
    .into_inner();
    assert_eq!(sent.recipients, 3);
    let waiting = store.offline_messages("lim").await.unwrap();
    assert_eq!(waiting.len(), 1, "{waiting:?}");
    assert!(
        waiting[0].1.contains("Maintenance tonight")
            && waiting[0].1.contains(&format!("from='{DOMAIN}'")),
        "{waiting:?}"
    );
    assert_eq!(
        store.offline_messages("root").await.unwrap().len(),
        2,
        "preview and broadcast"
    );
    for (body, to) in [
        ("", pb::AnnouncementRecipients::All),
        ("text", pb::AnnouncementRecipients::Unspecified),
    ] {
        assert_reason(
            announce(&mut admin, body, to).await,
            Code::InvalidArgument,
            "invalid-argument",
        );
    }
    assert_reason(
        announce(&mut lim, "spam", pb::AnnouncementRecipients::All).await,
        Code::PermissionDenied,
        "permission-denied",
    );

    // --- Profile --------------------------------------------------------------------------
    let bob_login = login(&mut anon, "bob", "bob password 1").await;
    let mut bob = Api::new(&channel, &secret, Some(&bob_login.session_token));
    let bob_other = login(&mut anon, "bob", "bob password 1").await;
    let me = bob
        .profile
        .set_display_name(pb::SetDisplayNameRequest {
            display_name: "Robert".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(me.display_name, "Robert");
    assert_eq!(
        bob.profile
            .get_profile(pb::GetProfileRequest {})
            .await
            .unwrap()
            .into_inner()
            .display_name,
        "Robert"
    );
    assert_eq!(
        bob.profile
            .get_profile_details(pb::GetProfileRequest {})
            .await
            .unwrap()
            .into_inner()
            .nickname,
        "Robert",
        "the display name is the PEP nickname"
    );
    // The profile contacts see: PEP nickname, avatar, visibility (spec 5.4.4).
    let avatar = b"\x89PNG\r\n\x1a\nnot really an image".to_vec();
    let details = bob
        .profile
        .update_profile(pb::UpdateProfileRequest {
            nickname: Some("Bobby".into()),
            avatar: avatar.clone(),
            avatar_type: "image/png".into(),
            access_model: "whitelist".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let sha1: String = {
        use sha1::Digest;
        sha1::Sha1::digest(&avatar)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    assert_eq!(details.nickname, "Bobby");
    assert_eq!(details.access_model, "whitelist");
    assert_eq!(details.avatar_hash, sha1);
    let bob_jid = format!("bob@{DOMAIN}");
    let get_avatar = |api: &mut Api| {
        let mut p = api.profile.clone();
        let jid = bob_jid.clone();
        async move { p.get_avatar(pb::GetAvatarRequest { jid }).await }
    };
    let own = get_avatar(&mut bob).await.unwrap().into_inner();
    assert_eq!(
        (own.data, own.mime_type, own.sha1),
        (avatar.clone(), "image/png".to_string(), sha1.clone())
    );
    assert!(
        get_avatar(&mut admin).await.is_ok(),
        "admins see every avatar"
    );
    assert_reason(get_avatar(&mut lim).await, Code::NotFound, "not-found");
    bob.profile
        .update_profile(pb::UpdateProfileRequest {
            access_model: "open".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(get_avatar(&mut lim).await.unwrap().into_inner().sha1, sha1);
    let details = bob
        .profile
        .get_profile_details(pb::GetProfileRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (details.nickname.as_str(), details.access_model.as_str()),
        ("Bobby", "open"),
        "an update without a nickname keeps it"
    );
    assert_eq!(
        bob.profile
            .get_profile(pb::GetProfileRequest {})
            .await
            .unwrap()
            .into_inner()
            .avatar_hash,
        sha1
    );
    assert_reason(
        bob.profile
            .update_profile(pb::UpdateProfileRequest {
                avatar: vec![0; 1024 * 1024 + 1],
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "avatar-too-big",
    );
    assert_reason(
        bob.profile
            .update_profile(pb::UpdateProfileRequest {
                access_model: "authorize".into(),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "invalid-argument",
    );
    assert_reason(
        bob.profile
            .change_password(pb::ChangePasswordRequest {
                old_password: "wrong".into(),
                new_password: "new bob password".into(),
            })
            .await,
        Code::PermissionDenied,
        "wrong-password",
    );
    assert_reason(
        bob.profile
            .change_password(pb::ChangePasswordRequest {
                old_password: "bob password 1".into(),
                new_password: "short".into(),
            })
            .await,
        Code::InvalidArgument,
        "weak-password",
    );
    bob.profile
        .change_password(pb::ChangePasswordRequest {
            old_password: "bob password 1".into(),
            new_password: "new bob password".into(),
        })
        .await
        .unwrap();
    // This session continues, the other one was revoked, and only the new password works.
    bob.profile
        .get_profile(pb::GetProfileRequest {})
        .await
        .unwrap();
    let mut other = Api::new(&channel, &secret, Some(&bob_other.session_token));
    assert_reason(
        other.profile.get_profile(pb::GetProfileRequest {}).await,
        Code::Unauthenticated,
        "session-invalid",
    );
    assert_reason(
        anon.auth
            .login(pb::LoginRequest {
                username: "bob".into(),
                password: "bob password 1".into(),
            })
            .await,
        Code::Unauthenticated,
        "invalid-credentials",
    );
    login(&mut anon, "bob", "new bob password").await;

    // --- Deletion and logout --------------------------------------------------------------
    admin
        .users
        .delete_user(pb::DeleteUserRequest {
            username: "bob".into(),
        })
        .await
        .unwrap();
    assert_reason(
        bob.profile.get_profile(pb::GetProfileRequest {}).await,
        Code::Unauthenticated,
        "session-invalid",
    );
    let pals = admin
        .circles
        .get_circle(pb::GetCircleRequest {
            id: friends.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(pals.members.is_empty(), "deleted users leave every circle");
    assert_reason(
        admin
            .users
            .delete_user(pb::DeleteUserRequest {
                username: "bob".into(),
            })
            .await,
        Code::NotFound,
        "user-not-found",
    );
    admin
        .circles
        .add_circle_member(pb::AddCircleMemberRequest {
            id: friends.id.clone(),
            username: "lim".into(),
        })
        .await
        .unwrap();
    admin
        .circles
        .delete_circle(pb::DeleteCircleRequest {
            id: friends.id.clone(),
        })
        .await
        .unwrap();
    assert!(
        store.account("lim").await.unwrap().is_some(),
        "circle deletion keeps users"
    );
    assert_reason(
        admin
            .circles
            .delete_circle(pb::DeleteCircleRequest {
                id: friends.id.clone(),
            })
            .await,
        Code::NotFound,
        "group-not-found",
    );
    // A second admin makes the first demotable.
    admin
        .users
        .update_user(pb::UpdateUserRequest {
            username: "lim".into(),
            display_name: None,
            role: pb::Role::Admin as i32,
        })
        .await
        .unwrap();
    let demoted = admin
        .users
        .update_user(pb::UpdateUserRequest {
            username: "root".into(),
            display_name: None,
            role: pb::Role::Normal as i32,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(demoted.role, pb::Role::Normal as i32);
    assert_reason(
        admin.users.list_users(pb::ListUsersRequest {}).await,
        Code::PermissionDenied,
        "permission-denied",
    );
    admin.auth.logout(pb::LogoutRequest {}).await.unwrap();
    assert_reason(
        admin.profile.get_profile(pb::GetProfileRequest {}).await,
        Code::Unauthenticated,
        "session-invalid",
    );

    // --- A contact invitation makes inviter and invitee mutual contacts (spec 3.3) ----------
    store
        .create_account("dora", Role::Normal, &credentials("dora password 1"), None)
        .await
        .unwrap();
    let contact_invite = store
        .create_invite(snikket_store::NewInvite {
            kind: snikket_store::InviteKind::Contact,
            inviter: Some("dora".into()),
            username: None,
            role: Role::Normal,
            circles: Vec::new(),
            note: None,
            source: "test".into(),
            ttl_secs: 3600,
        })
        .await
        .unwrap();
    let mut public = pb::public_invites_client::PublicInvitesClient::with_interceptor(
        channel.clone(),
        Creds {
            secret: secret.clone(),
            session: None,
        },
    );
    public
        .register(pb::RegisterRequest {
            token: contact_invite.token.clone(),
            username: "cleo".into(),
            password: "a long enough password".into(),
        })
        .await
        .unwrap();
    for (owner, contact) in [("dora", "cleo"), ("cleo", "dora")] {
        let item = store
            .roster_item(owner, &format!("{contact}@{DOMAIN}"))
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{contact} missing from {owner}'s roster"));
        assert_eq!(item.subscription, snikket_store::Subscription::Both);
    }
    // Without circles, a contact invitation joins the default circle.
    assert!(store
        .circle_members(snikket_store::DEFAULT_CIRCLE_ID)
        .await
        .unwrap()
        .contains(&"cleo".to_string()));

    store.close().await;
    let status = server.terminate();
    assert!(status.success(), "server exit status {status:?}");
}
