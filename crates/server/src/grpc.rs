//! The admin gRPC API for the portal (`proto/snikket/admin/v1/admin.proto`, spec 5.7).
//!
//! Every call passes two checks: the internal shared secret (the [`SecretCheck`] interceptor)
//! and, except `Auth.Login`, a portal session token in `x-snikket-session` ([`AdminApi::caller`]).
//! Handlers live in `grpc/<service>.rs`; all failures become a `tonic::Status` in exactly one
//! place ([`fail`], [`internal`]), carrying a stable reason (see the proto header).

mod auth;
mod circles;
mod invitations;
mod profile;
pub mod public_invites;
mod system;
mod users;

use snikket_config::Config;
use snikket_rpc::snikket::admin::v1 as pb;
use snikket_rpc::{check_loopback, SecretCheck};
use snikket_runtime::CancellationToken;
use snikket_store::{
    AccountChangeError, AccountState, Credential, Invite, InviteKind, Role, Store, StoreError,
};
use snikket_xmpp::scram::{ScramHash, StoredCredentials};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tonic::metadata::MetadataValue;
use tonic::{Code, Request, Status};

/// Metadata key of the portal session token.
pub const SESSION_HEADER: &str = "x-snikket-session";

/// Metadata key of the machine-readable error reason.
pub const REASON_HEADER: &str = "x-snikket-reason";

/// Lifetime of a portal session.
pub const SESSION_TTL_SECS: i64 = 86_400;

/// Why the gRPC server could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum GrpcError {
    /// The configured address is not loopback.
    #[error(transparent)]
    NotLoopback(#[from] snikket_rpc::RpcError),
    /// Binding failed.
    #[error("binding the admin gRPC listener on {addr}: {source}")]
    Bind {
        /// Where.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
    /// The transport failed while serving.
    #[error("serving the admin gRPC api: {0}")]
    Serve(#[from] tonic::transport::Error),
}

/// Binds `grpc_interface:grpc_port`, refusing any non-loopback address.
pub async fn bind(config: &Config) -> Result<TcpListener, GrpcError> {
    let addr = check_loopback(SocketAddr::new(
        config.grpc_interface,
        config.server.grpc_port,
    ))?;
    TcpListener::bind(addr)
        .await
        .map_err(|source| GrpcError::Bind { addr, source })
}

/// Serves every admin service on `listener` until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    api: AdminApi,
    secret: &str,
    shutdown: CancellationToken,
) -> Result<(), GrpcError> {
    let check = SecretCheck::new(secret);
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "admin gRPC api listening");
    }
    tonic::transport::Server::builder()
        .add_service(pb::auth_server::AuthServer::with_interceptor(
            api.clone(),
            check.clone(),
        ))
        .add_service(pb::users_server::UsersServer::with_interceptor(
            api.clone(),
            check.clone(),
        ))
        .add_service(pb::invitations_server::InvitationsServer::with_interceptor(
            api.clone(),
            check.clone(),
        ))
        .add_service(pb::circles_server::CirclesServer::with_interceptor(
            api.clone(),
            check.clone(),
        ))
        .add_service(pb::system_server::SystemServer::with_interceptor(
            api.clone(),
            check.clone(),
        ))
        .add_service(
            pb::public_invites_server::PublicInvitesServer::with_interceptor(
                api.clone(),
                check.clone(),
            ),
        )
        // Account data imports may be up to 6 MiB (the portal accepts 5).
        .add_service(tonic::service::interceptor::InterceptedService::new(
            pb::profile_server::ProfileServer::new(api)
                .max_decoding_message_size(MAX_IMPORT_MESSAGE)
                .max_encoding_message_size(MAX_EXPORT_MESSAGE),
            check,
        ))
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            shutdown.cancelled_owned(),
        )
        .await?;
    Ok(())
}

/// Largest Profile request (an account data import), in bytes.
const MAX_IMPORT_MESSAGE: usize = 6 * 1024 * 1024;
/// Largest Profile response (an account data export), in bytes.
const MAX_EXPORT_MESSAGE: usize = 64 * 1024 * 1024;

/// Shared state of all admin services; cheap to clone.
#[derive(Clone, Debug)]
pub struct AdminApi {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Store,
    config: Config,
    started_at: i64,
    live: Live,
}

/// The running XMPP side, for changes its sessions must hear about (PEP notifications).
#[derive(Default)]
struct Live(std::sync::OnceLock<Arc<crate::state::State>>);

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.get().is_some() {
            "Live(attached)"
        } else {
            "Live(none)"
        })
    }
}

/// The signed-in user behind a call.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    pub(crate) username: String,
    pub(crate) role: Role,
    /// The session token of this call (never logged).
    pub(crate) token: String,
}

impl AdminApi {
    /// Builds the API over `store`.
    pub fn new(config: Config, store: Store) -> Self {
        AdminApi {
            inner: Arc::new(Inner {
                store,
                config,
                started_at: snikket_store::now(),
                live: Live::default(),
            }),
        }
    }

    /// Connects the API to the running XMPP side (once; later calls are ignored).
    pub fn attach(&self, state: Arc<crate::state::State>) {
        let _ = self.inner.live.0.set(state);
    }

    /// The running XMPP side; `unavailable` before it started.
    pub(crate) fn live(&self) -> Result<&crate::state::State, Status> {
        self.inner.live.0.get().map(|s| s.as_ref()).ok_or_else(|| {
            fail(
                Code::Unavailable,
                "starting",
                "the XMPP service is still starting",
            )
        })
    }

    pub(crate) fn store(&self) -> &Store {
        &self.inner.store
    }

    pub(crate) fn config(&self) -> &Config {
        &self.inner.config
    }

    /// Authenticates the session of `req`.
    pub(crate) async fn caller<T>(&self, req: &Request<T>) -> Result<Caller, Status> {
        let token = req
            .metadata()
            .get(SESSION_HEADER)
            .and_then(|v| v.to_str().ok())
            .filter(|t| !t.is_empty() && t.len() <= 256)
            .ok_or_else(|| fail(Code::Unauthenticated, "session-invalid", "no session token"))?;
        let session = self
            .store()
            .portal_session(token)
            .await
            .map_err(internal)?
            .ok_or_else(|| {
                fail(
                    Code::Unauthenticated,
                    "session-invalid",
                    "unknown, expired or revoked session",
                )
            })?;
        let account = self
            .store()
            .account(&session.username)
            .await
            .map_err(internal)?
            .ok_or_else(|| fail(Code::Unauthenticated, "session-invalid", "account is gone"))?;
        if account.state != AccountState::Active {
            return Err(fail(
                Code::PermissionDenied,
                "account-disabled",
                "the account is locked",
            ));
        }
        Ok(Caller {
            username: account.username,
            role: account.role,
            token: token.to_string(),
        })
    }

    /// Authenticates the session of `req` and requires the admin role.
    pub(crate) async fn admin<T>(&self, req: &Request<T>) -> Result<Caller, Status> {
        let caller = self.caller(req).await?;
        if caller.role != Role::Admin {
            tracing::info!(user = %caller.username, "non-admin refused an admin call");
            return Err(fail(
                Code::PermissionDenied,
                "permission-denied",
                "administrators only",
            ));
        }
        Ok(caller)
    }

    /// `localpart@DOMAIN`.
    pub(crate) fn jid(&self, username: &str) -> String {
        format!("{username}@{}", self.config().domain.ascii)
    }

    /// Normalises a username from a request: trims, drops `@DOMAIN`, lowercases.
    pub(crate) fn localpart(&self, input: &str) -> Result<String, Status> {
        let mut s = input.trim().to_lowercase();
        for domain in [&self.config().domain.ascii, &self.config().domain.unicode] {
            let suffix = format!("@{}", domain.to_lowercase());
            if let Some(stripped) = s.strip_suffix(&suffix) {
                s = stripped.to_string();
            }
        }
        if s.is_empty()
            || s.len() > 1023
            || s.chars()
                .any(|c| c.is_whitespace() || c.is_control() || "@/\"&'<>:".contains(c))
        {
            return Err(fail(
                Code::InvalidArgument,
                "invalid-argument",
                "username is not a valid localpart",
            ));
        }
        Ok(s)
    }

    /// The proto view of an account.
    pub(crate) async fn user_message(
        &self,
        account: snikket_store::Account,
    ) -> Result<pb::User, Status> {
        let store = self.store();
        let deletion_requested_at = store
            .deletion_requested_at(&account.username)
            .await
            .map_err(internal)?;
        let retention = i64::from(self.config().server.retention_days) * snikket_store::DAY_SECS;
        let circles = store
            .circles_of(&account.username)
            .await
            .map_err(internal)?;
        Ok(pb::User {
            jid: self.jid(&account.username),
            display_name: account.display_name.unwrap_or_default(),
            role: role_to_pb(account.role) as i32,
            state: state_to_pb(account.state) as i32,
            avatar_hash: self
                .avatar_info(&account.username)
                .await?
                .map(|a| a.0)
                .unwrap_or_default(),
            last_active_at: account.last_active_at,
            created_at: account.created_at,
            deletion_requested_at,
            pending_until: deletion_requested_at.map(|t| t.saturating_add(retention)),
            circles,
            username: account.username,
        })
    }

    /// The user message of `username`, or user-not-found.
    pub(crate) async fn user_by_name(&self, username: &str) -> Result<pb::User, Status> {
        let account = self
            .store()
            .account(username)
            .await
            .map_err(internal)?
            .ok_or_else(user_not_found)?;
        self.user_message(account).await
    }

    /// The proto view of an invitation, with its links (spec 4.4).
    pub(crate) fn invitation_message(&self, invite: Invite) -> pb::Invitation {
        let domain = &self.config().domain.ascii;
        let token = &invite.token;
        let xmpp_uri = match invite.kind {
            InviteKind::Account | InviteKind::Group => {
                format!("xmpp:{domain}?register;preauth={token}")
            }
            InviteKind::Reset => format!(
                "xmpp:{}@{domain}?register;preauth={token}",
                invite.username.as_deref().unwrap_or_default()
            ),
            InviteKind::Contact => format!(
                "xmpp:{}@{domain}?roster;preauth={token};ibr=y",
                invite.inviter.as_deref().unwrap_or_default()
            ),
        };
        pb::Invitation {
            landing_url: self.config().invite_landing_url(token),
            xmpp_uri,
            token: invite.token.clone(),
            id: invite.invite_id,
            kind: kind_to_pb(invite.kind) as i32,
            reusable: invite.reusable,
            role: role_to_pb(invite.role) as i32,
            circles: invite.circles,
            note: invite.note.unwrap_or_default(),
            inviter: invite.inviter.unwrap_or_default(),
            username: invite.username.unwrap_or_default(),
            created_at: invite.created_at,
            expires_at: invite.expires_at,
            source: invite.source,
            use_count: invite.use_count,
        }
    }

    /// Checks `password` against the stored SCRAM verifier of `username` (SHA-256 preferred).
    /// Unknown users and accounts without credentials cost the same work and return false.
    pub(crate) async fn verify_password(
        &self,
        username: &str,
        password: &str,
    ) -> Result<bool, Status> {
        let store = self.store();
        let stored = match store
            .credential(username, "SCRAM-SHA-256")
            .await
            .map_err(internal)?
        {
            Some(c) => Some((ScramHash::Sha256, c)),
            None => store
                .credential(username, "SCRAM-SHA-1")
                .await
                .map_err(internal)?
                .map(|c| (ScramHash::Sha1, c)),
        };
        let password = password.to_string();
        let ok = tokio::task::spawn_blocking(move || {
            use subtle_eq::ct_eq;
            match stored {
                Some((hash, c)) => {
                    match StoredCredentials::derive(hash, &password, &c.salt, c.iterations) {
                        Ok(derived) => ct_eq(&derived.stored_key, &c.stored_key),
                        Err(_) => false,
                    }
                }
                None => {
                    // Same cost as a real check, so timing does not reveal unknown users.
                    let _ = StoredCredentials::derive(
                        ScramHash::Sha256,
                        &password,
                        b"snikket-no-such-user",
                        snikket_xmpp::scram::DEFAULT_ITERATIONS,
                    );
                    false
                }
            }
        })
        .await
        .map_err(internal)?;
        Ok(ok)
    }

    /// Fresh SCRAM-SHA-1 and SCRAM-SHA-256 verifiers for `password`.
    pub(crate) async fn credentials_for(&self, password: &str) -> Result<Vec<Credential>, Status> {
        let password = password.to_string();
        tokio::task::spawn_blocking(move || {
            [
                (ScramHash::Sha1, "SCRAM-SHA-1"),
                (ScramHash::Sha256, "SCRAM-SHA-256"),
            ]
            .into_iter()
            .map(|(hash, mechanism)| {
                StoredCredentials::new_random(hash, &password)
                    .map(|c| Credential {
                        mechanism: mechanism.to_string(),
                        salt: c.salt,
                        iterations: c.iterations,
                        stored_key: c.stored_key,
                        server_key: c.server_key,
                    })
                    .map_err(|_| {
                        fail(
                            Code::InvalidArgument,
                            "weak-password",
                            "the password contains characters that are not allowed",
                        )
                    })
            })
            .collect::<Result<Vec<_>, Status>>()
        })
        .await
        .map_err(internal)?
    }
}

/// Constant-time byte comparison (length is not secret).
mod subtle_eq {
    pub(super) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
        if a.len() != b.len() {
            return false;
        }
        let mut diff = 0u8;
        for (x, y) in a.iter().zip(b) {
            diff |= x ^ y;
        }
        std::hint::black_box(diff) == 0
    }
}

/// An error status with a stable `reason` (metadata `x-snikket-reason` and message prefix).
pub(crate) fn fail(code: Code, reason: &'static str, detail: impl std::fmt::Display) -> Status {
    let mut status = Status::new(code, format!("{reason}: {detail}"));
    status
        .metadata_mut()
        .insert(REASON_HEADER, MetadataValue::from_static(reason));
    status
}

/// Logs an internal failure with an error id and hides its details from the client.
pub(crate) fn internal(e: impl std::fmt::Display) -> Status {
    let error_id = format!("{:016x}", rand::random::<u64>());
    tracing::error!(%error_id, error = %e, "admin api call failed");
    fail(
        Code::Internal,
        "internal",
        format_args!("error id {error_id}"),
    )
}

pub(crate) fn user_not_found() -> Status {
    fail(Code::NotFound, "user-not-found", "user not found")
}

pub(crate) fn group_not_found() -> Status {
    fail(Code::NotFound, "group-not-found", "circle not found")
}

/// Maps a guarded account change failure.
pub(crate) fn account_change(e: AccountChangeError) -> Status {
    match e {
        AccountChangeError::NotFound => user_not_found(),
        AccountChangeError::LastAdmin => fail(
            Code::FailedPrecondition,
            "cannot-remove-only-admin",
            "cannot remove the only administrator",
        ),
        AccountChangeError::Store(e) => internal(e),
    }
}

/// Maps a store failure where "not found" means a missing user.
pub(crate) fn store_user(e: StoreError) -> Status {
    match e {
        StoreError::NotFound { .. } => user_not_found(),
        e => internal(e),
    }
}

pub(crate) fn role_to_pb(role: Role) -> pb::Role {
    match role {
        Role::Limited => pb::Role::Limited,
        Role::Normal => pb::Role::Normal,
        Role::Admin => pb::Role::Admin,
    }
}

/// `None` for ROLE_UNSPECIFIED; invalid-argument for unknown numbers.
pub(crate) fn role_from_pb(value: i32) -> Result<Option<Role>, Status> {
    match pb::Role::try_from(value) {
        Ok(pb::Role::Unspecified) => Ok(None),
        Ok(pb::Role::Limited) => Ok(Some(Role::Limited)),
        Ok(pb::Role::Normal) => Ok(Some(Role::Normal)),
        Ok(pb::Role::Admin) => Ok(Some(Role::Admin)),
        Err(_) => Err(fail(
            Code::InvalidArgument,
            "invalid-argument",
            "unknown role",
        )),
    }
}

fn state_to_pb(state: AccountState) -> pb::AccountState {
    match state {
        AccountState::Active => pb::AccountState::Active,
        AccountState::Disabled => pb::AccountState::Locked,
        AccountState::PendingDeletion => pb::AccountState::PendingDeletion,
    }
}

fn kind_to_pb(kind: InviteKind) -> pb::InvitationKind {
    match kind {
        InviteKind::Account => pb::InvitationKind::Account,
        InviteKind::Group => pb::InvitationKind::Group,
        InviteKind::Contact => pb::InvitationKind::Contact,
        InviteKind::Reset => pb::InvitationKind::PasswordReset,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_carry_their_reason_twice() {
        let s = fail(Code::NotFound, "user-not-found", "user not found");
        assert_eq!(s.code(), Code::NotFound);
        assert_eq!(s.message(), "user-not-found: user not found");
        assert_eq!(
            s.metadata()
                .get(REASON_HEADER)
                .and_then(|v| v.to_str().ok()),
            Some("user-not-found")
        );
    }

    #[test]
    fn constant_time_compare() {
        assert!(subtle_eq::ct_eq(b"abc", b"abc"));
        assert!(!subtle_eq::ct_eq(b"abc", b"abd"));
        assert!(!subtle_eq::ct_eq(b"abc", b"ab"));
    }
}
