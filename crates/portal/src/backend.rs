//! The gRPC client to the server and the mapping of its error reasons to friendly text.

use crate::i18n::n_;
use snikket_rpc::snikket::admin::v1 as api;
use snikket_rpc::snikket::certs::v1 as certs_api;
use snikket_rpc::snikket::turn::v1 as turn_api;
use snikket_rpc::SecretHeader;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

/// Metadata key of the session token.
pub const SESSION_HEADER: &str = "x-snikket-session";
/// Metadata key of the machine-readable error reason.
pub const REASON_HEADER: &str = "x-snikket-reason";

type Svc = InterceptedService<Channel, SecretHeader>;

/// Clients to the server's admin API, sharing one lazy channel, and to the status APIs of the
/// certificate manager and the TURN server.
#[derive(Clone, Debug)]
pub struct Backend {
    channel: Channel,
    secret: SecretHeader,
    certs: Option<Channel>,
    turn: Option<Channel>,
}

/// How long the system page waits for the other services' status.
const STATUS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

fn lazy_channel(uri: &str) -> Result<Channel, ClientError> {
    Ok(Endpoint::from_shared(uri.to_string())
        .map_err(|_| ClientError::Endpoint(uri.to_string()))?
        .connect_timeout(STATUS_TIMEOUT)
        .timeout(STATUS_TIMEOUT)
        .connect_lazy())
}

/// A failed call, as the pages need it.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The server could not be reached (or failed internally): the branded 503 page.
    #[error("server unavailable ({detail})")]
    Unavailable {
        /// What happened, for the log only.
        detail: String,
    },
    /// The server refused with a reason of the API's convention.
    #[error("{reason}: {detail}")]
    Refused {
        /// The stable reason, e.g. `weak-password`.
        reason: String,
        /// The English detail.
        detail: String,
    },
}

/// Errors building the client.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The endpoint URI is malformed.
    #[error("bad gRPC endpoint {0}")]
    Endpoint(String),
    /// The secret is not a valid header value.
    #[error("the internal secret is not a valid header value")]
    Secret,
}

impl BackendError {
    /// The reason, or `unavailable`.
    pub fn reason(&self) -> &str {
        match self {
            BackendError::Unavailable { .. } => "unavailable",
            BackendError::Refused { reason, .. } => reason,
        }
    }
}

impl From<tonic::Status> for BackendError {
    fn from(s: tonic::Status) -> Self {
        use tonic::Code;
        let from_meta = s
            .metadata()
            .get(REASON_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let from_message = s
            .message()
            .split_once(": ")
            .map(|(r, _)| r)
            .filter(|r| !r.is_empty() && r.bytes().all(|b| b.is_ascii_lowercase() || b == b'-'))
            .map(str::to_string);
        match (s.code(), from_meta.or(from_message)) {
            (Code::Unavailable | Code::Unknown | Code::DeadlineExceeded | Code::Cancelled, _)
            | (Code::Internal, _) => BackendError::Unavailable {
                detail: format!("{:?}: {}", s.code(), s.message()),
            },
            (Code::Unauthenticated, None) => BackendError::Unavailable {
                detail: "the internal secret was refused".into(),
            },
            (code, reason) => BackendError::Refused {
                reason: reason.unwrap_or_else(|| match code {
                    Code::NotFound => "not-found".into(),
                    Code::PermissionDenied => "permission-denied".into(),
                    Code::InvalidArgument => "invalid-argument".into(),
                    _ => "internal".into(),
                }),
                detail: s.message().to_string(),
            },
        }
    }
}

fn not_configured() -> BackendError {
    BackendError::Unavailable {
        detail: "not configured".into(),
    }
}

/// Friendly English text for an API reason (spec 5.8).
pub fn friendly(reason: &str) -> &'static str {
    match reason {
        "invalid-credentials" => n_("The username or password is not correct."),
        "session-invalid" => n_("Your session has ended. Please log in again."),
        "account-disabled" => n_("This account is locked. Please contact the administrator."),
        "permission-denied" => n_("You are not allowed to do this."),
        "user-not-found" => n_("There is no such user."),
        "group-not-found" => n_("There is no such circle."),
        "chat-not-found" => n_("There is no such group chat."),
        "invite-not-found" | "not-found" => {
            n_("This invitation does not exist, has expired or was already used.")
        }
        "cannot-remove-only-admin" => n_("This would leave the service without an administrator."),
        "default-circle-protected" => n_("The default circle cannot be renamed or deleted."),
        "group-name-required" => n_("Please enter a name."),
        "wrong-password" => n_("The current password is not correct."),
        "avatar-too-big" => {
            n_("The chosen avatar is too big. To be able to upload larger avatars, please use the app.")
        }
        "weak-password" => n_("The new password must be at least 10 characters long."),
        "username-taken" => n_("That username is already taken."),
        "password-contains-username" => n_("The password must not contain the username."),
        "invalid-username" => n_("The username is not valid."),
        "invalid-argument" => n_("Some of the values entered are not valid."),
        "throttled" => n_("Too many attempts. Please wait a few minutes and try again."),
        "not-xep227" => {
            n_("The account data you tried to import is not in XEP-0227 format. Please upload the file your previous service exported.")
        }
        "unavailable" => n_("The service is temporarily unavailable. Please try again shortly."),
        _ => n_("Something went wrong. Please try again."),
    }
}

fn with_session<T>(msg: T, token: &str) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.set_timeout(std::time::Duration::from_secs(10));
    if let Ok(v) = token.parse() {
        req.metadata_mut().insert(SESSION_HEADER, v);
    }
    req
}

impl Backend {
    /// A lazily connecting client to `uri` (e.g. `http://127.0.0.1:5290`) presenting `secret`.
    pub fn new(uri: &str, secret: &str) -> Result<Self, ClientError> {
        let endpoint = Endpoint::from_shared(uri.to_string())
            .map_err(|_| ClientError::Endpoint(uri.to_string()))?
            .connect_timeout(std::time::Duration::from_secs(3));
        let secret = SecretHeader::new(secret).map_err(|_| ClientError::Secret)?;
        Ok(Backend {
            channel: endpoint.connect_lazy(),
            secret,
            certs: None,
            turn: None,
        })
    }

    /// Also asks the certificate manager at `certs_uri` and the TURN server at `turn_uri` for
    /// their status (same secret).
    pub fn with_status(mut self, certs_uri: &str, turn_uri: &str) -> Result<Self, ClientError> {
        self.certs = Some(lazy_channel(certs_uri)?);
        self.turn = Some(lazy_channel(turn_uri)?);
        Ok(self)
    }

    /// `Certs.GetCertStatus` of the certificate manager.
    pub async fn cert_status(&self) -> Result<certs_api::CertStatus, BackendError> {
        let channel = self.certs.clone().ok_or_else(not_configured)?;
        let mut client =
            certs_api::certs_client::CertsClient::with_interceptor(channel, self.secret.clone());
        Ok(client
            .get_cert_status(certs_api::GetCertStatusRequest {})
            .await?
            .into_inner())
    }

    /// `TurnStatus.GetStats` of the TURN server.
    pub async fn turn_stats(&self) -> Result<turn_api::GetStatsResponse, BackendError> {
        let channel = self.turn.clone().ok_or_else(not_configured)?;
        let mut client = turn_api::turn_status_client::TurnStatusClient::with_interceptor(
            channel,
            self.secret.clone(),
        );
        Ok(client
            .get_stats(turn_api::GetStatsRequest {})
            .await?
            .into_inner())
    }

    fn auth(&self) -> api::auth_client::AuthClient<Svc> {
        api::auth_client::AuthClient::with_interceptor(self.channel.clone(), self.secret.clone())
    }

    fn profile(&self) -> api::profile_client::ProfileClient<Svc> {
        api::profile_client::ProfileClient::with_interceptor(
            self.channel.clone(),
            self.secret.clone(),
        )
        // Account data exports can be large (avatars in PEP); imports are up to 5 MiB.
        .max_decoding_message_size(64 * 1024 * 1024)
        .max_encoding_message_size(6 * 1024 * 1024)
    }

    /// `Profile.ExportAccountData`: the caller's XEP-0227 document.
    pub async fn export_account_data(&self, token: &str) -> Result<api::AccountData, BackendError> {
        Ok(self
            .profile()
            .export_account_data(with_session(api::ExportAccountDataRequest {}, token))
            .await?
            .into_inner())
    }

    /// `Profile.ImportAccountData`.
    pub async fn import_account_data(
        &self,
        token: &str,
        xml: Vec<u8>,
    ) -> Result<api::ImportAccountDataResponse, BackendError> {
        Ok(self
            .profile()
            .import_account_data(with_session(api::ImportAccountDataRequest { xml }, token))
            .await?
            .into_inner())
    }

    fn invitations(&self) -> api::invitations_client::InvitationsClient<Svc> {
        api::invitations_client::InvitationsClient::with_interceptor(
            self.channel.clone(),
            self.secret.clone(),
        )
    }

    /// `Auth.Login`.
    pub async fn login(
        &self,
        username: &str,
        password: &str,
    ) -> Result<api::LoginResponse, BackendError> {
        let mut req = tonic::Request::new(api::LoginRequest {
            username: username.to_string(),
            password: password.to_string(),
        });
        req.set_timeout(std::time::Duration::from_secs(10));
        Ok(self.auth().login(req).await?.into_inner())
    }

    /// `Auth.Logout`.
    pub async fn logout(&self, token: &str) -> Result<(), BackendError> {
        self.auth()
            .logout(with_session(api::LogoutRequest {}, token))
            .await?;
        Ok(())
    }

    /// `Profile.GetProfile`.
    pub async fn profile_of(&self, token: &str) -> Result<api::User, BackendError> {
        Ok(self
            .profile()
            .get_profile(with_session(api::GetProfileRequest {}, token))
            .await?
            .into_inner())
    }

    /// `Profile.SetDisplayName`.
    pub async fn set_display_name(
        &self,
        token: &str,
        display_name: &str,
    ) -> Result<api::User, BackendError> {
        Ok(self
            .profile()
            .set_display_name(with_session(
                api::SetDisplayNameRequest {
                    display_name: display_name.to_string(),
                },
                token,
            ))
            .await?
            .into_inner())
    }

    /// `Profile.GetProfileDetails`.
    pub async fn profile_details(&self, token: &str) -> Result<api::ProfileDetails, BackendError> {
        Ok(self
            .profile()
            .get_profile_details(with_session(api::GetProfileRequest {}, token))
            .await?
            .into_inner())
    }

    /// `Profile.UpdateProfile`.
    pub async fn update_profile(
        &self,
        token: &str,
        update: api::UpdateProfileRequest,
    ) -> Result<api::ProfileDetails, BackendError> {
        Ok(self
            .profile()
            .update_profile(with_session(update, token))
            .await?
            .into_inner())
    }

    /// `Profile.GetAvatar`.
    pub async fn avatar(&self, token: &str, jid: &str) -> Result<api::Avatar, BackendError> {
        Ok(self
            .profile()
            .get_avatar(with_session(
                api::GetAvatarRequest {
                    jid: jid.to_string(),
                },
                token,
            ))
            .await?
            .into_inner())
    }

    /// `Profile.ChangePassword`.
    pub async fn change_password(
        &self,
        token: &str,
        old_password: &str,
        new_password: &str,
    ) -> Result<(), BackendError> {
        self.profile()
            .change_password(with_session(
                api::ChangePasswordRequest {
                    old_password: old_password.to_string(),
                    new_password: new_password.to_string(),
                },
                token,
            ))
            .await?;
        Ok(())
    }

    /// `Invitations.ListInvitations` (account, group and contact invitations).
    pub async fn list_invitations(
        &self,
        token: &str,
    ) -> Result<Vec<api::Invitation>, BackendError> {
        Ok(self
            .invitations()
            .list_invitations(with_session(
                api::ListInvitationsRequest {
                    include_password_resets: false,
                },
                token,
            ))
            .await?
            .into_inner()
            .invitations)
    }

    /// `Invitations.CreateInvitation`.
    pub async fn create_invitation(
        &self,
        token: &str,
        req: api::CreateInvitationRequest,
    ) -> Result<api::Invitation, BackendError> {
        Ok(self
            .invitations()
            .create_invitation(with_session(req, token))
            .await?
            .into_inner())
    }

    /// `Invitations.GetInvitation`.
    pub async fn get_invitation(
        &self,
        token: &str,
        id: &str,
    ) -> Result<api::Invitation, BackendError> {
        Ok(self
            .invitations()
            .get_invitation(with_session(
                api::GetInvitationRequest { id: id.to_string() },
                token,
            ))
            .await?
            .into_inner())
    }

    /// `Invitations.RevokeInvitation`.
    pub async fn revoke_invitation(&self, token: &str, id: &str) -> Result<(), BackendError> {
        self.invitations()
            .revoke_invitation(with_session(
                api::RevokeInvitationRequest { id: id.to_string() },
                token,
            ))
            .await?;
        Ok(())
    }
}

impl Backend {
    fn public_invites(&self) -> api::public_invites_client::PublicInvitesClient<Svc> {
        api::public_invites_client::PublicInvitesClient::with_interceptor(
            self.channel.clone(),
            self.secret.clone(),
        )
    }

    /// `Circles.ListCircles` (admin only).
    pub async fn list_circles(&self, token: &str) -> Result<Vec<api::Circle>, BackendError> {
        Ok(self
            .circles()
            .list_circles(with_session(api::ListCirclesRequest {}, token))
            .await?
            .into_inner()
            .circles)
    }

    fn circles(&self) -> api::circles_client::CirclesClient<Svc> {
        api::circles_client::CirclesClient::with_interceptor(
            self.channel.clone(),
            self.secret.clone(),
        )
    }

    /// `Circles.GetCircle` (admin only).
    pub async fn get_circle(&self, token: &str, id: &str) -> Result<api::Circle, BackendError> {
        Ok(self
            .circles()
            .get_circle(with_session(
                api::GetCircleRequest { id: id.to_string() },
                token,
            ))
            .await?
            .into_inner())
    }

    /// `Circles.CreateCircle` (admin only).
    pub async fn create_circle(
        &self,
        token: &str,
        name: &str,
    ) -> Result<api::Circle, BackendError> {
        Ok(self
            .circles()
            .create_circle(with_session(
                api::CreateCircleRequest {
                    name: name.to_string(),
                },
                token,
            ))
            .await?
            .into_inner())
    }

    /// `Circles.RenameCircle` (admin only).
    pub async fn rename_circle(
        &self,
        token: &str,
        id: &str,
        name: &str,
    ) -> Result<api::Circle, BackendError> {
        Ok(self
            .circles()
            .rename_circle(with_session(
                api::RenameCircleRequest {
                    id: id.to_string(),
                    name: name.to_string(),
                },
                token,
            ))
            .await?
            .into_inner())
    }

    /// `Circles.DeleteCircle` (admin only).
    pub async fn delete_circle(&self, token: &str, id: &str) -> Result<(), BackendError> {
        self.circles()
            .delete_circle(with_session(
                api::DeleteCircleRequest { id: id.to_string() },
                token,
            ))
            .await?;
        Ok(())
    }

    /// `Circles.AddCircleMember` (admin only).
    pub async fn add_circle_member(
        &self,
        token: &str,
        id: &str,
        username: &str,
    ) -> Result<api::Circle, BackendError> {
        Ok(self
            .circles()
            .add_circle_member(with_session(
                api::AddCircleMemberRequest {
                    id: id.to_string(),
                    username: username.to_string(),
                },
                token,
            ))
            .await?
            .into_inner())
    }

    /// `Circles.RemoveCircleMember` (admin only).
    pub async fn remove_circle_member(
        &self,
        token: &str,
        id: &str,
        username: &str,
    ) -> Result<api::Circle, BackendError> {
        Ok(self
            .circles()
            .remove_circle_member(with_session(
                api::RemoveCircleMemberRequest {
                    id: id.to_string(),
                    username: username.to_string(),
                },
                token,
            ))
            .await?
            .into_inner())
    }

    /// `Circles.AddCircleChat` (admin only).
    pub async fn add_circle_chat(
        &self,
        token: &str,
        id: &str,
        name: &str,
    ) -> Result<api::CircleChat, BackendError> {
        Ok(self
            .circles()
            .add_circle_chat(with_session(
                api::AddCircleChatRequest {
                    id: id.to_string(),
                    name: name.to_string(),
                },
                token,
            ))
            .await?
            .into_inner())
    }

    /// `Circles.RemoveCircleChat` (admin only).
    pub async fn remove_circle_chat(
        &self,
        token: &str,
        id: &str,
        chat_id: &str,
    ) -> Result<api::Circle, BackendError> {
        Ok(self
            .circles()
            .remove_circle_chat(with_session(
                api::RemoveCircleChatRequest {
                    id: id.to_string(),
                    chat_id: chat_id.to_string(),
                },
                token,
            ))
            .await?
            .into_inner())
    }

    /// `PublicInvites.GetInvite` (no session).
    pub async fn public_invite(&self, token: &str) -> Result<api::PublicInvite, BackendError> {
        let mut req = tonic::Request::new(api::GetInviteRequest {
            token: token.to_string(),
        });
        req.set_timeout(std::time::Duration::from_secs(10));
        Ok(self.public_invites().get_invite(req).await?.into_inner())
    }

    /// `PublicInvites.Register` (no session).
    pub async fn register(
        &self,
        token: &str,
        username: &str,
        password: &str,
    ) -> Result<api::RegisterResponse, BackendError> {
        let mut req = tonic::Request::new(api::RegisterRequest {
            token: token.to_string(),
            username: username.to_string(),
            password: password.to_string(),
        });
        req.set_timeout(std::time::Duration::from_secs(10));
        Ok(self.public_invites().register(req).await?.into_inner())
    }
}

/// The `Users` and `System` services (admin only).
impl Backend {
    fn users(&self) -> api::users_client::UsersClient<Svc> {
        api::users_client::UsersClient::with_interceptor(self.channel.clone(), self.secret.clone())
    }

    fn system(&self) -> api::system_client::SystemClient<Svc> {
        api::system_client::SystemClient::with_interceptor(
            self.channel.clone(),
            self.secret.clone(),
        )
    }

    /// `Users.ListUsers`, sorted by username.
    pub async fn list_users(&self, token: &str) -> Result<Vec<api::User>, BackendError> {
        Ok(self
            .users()
            .list_users(with_session(api::ListUsersRequest {}, token))
            .await?
            .into_inner()
            .users)
    }

    /// `Users.GetUser`.
    pub async fn get_user(&self, token: &str, username: &str) -> Result<api::User, BackendError> {
        Ok(self
            .users()
            .get_user(with_session(
                api::GetUserRequest {
                    username: username.to_string(),
                },
                token,
            ))
            .await?
            .into_inner())
    }

    /// `Users.UpdateUser`: `display_name` `None` and `Role::Unspecified` leave those unchanged.
    pub async fn update_user(
        &self,
        token: &str,
        username: &str,
        display_name: Option<String>,
        role: api::Role,
    ) -> Result<api::User, BackendError> {
        Ok(self
            .users()
            .update_user(with_session(
                api::UpdateUserRequest {
                    username: username.to_string(),
                    display_name,
                    role: role as i32,
                },
                token,
            ))
            .await?
            .into_inner())
    }

    /// `Users.DeleteUser` (immediate and permanent).
    pub async fn delete_user(&self, token: &str, username: &str) -> Result<(), BackendError> {
        self.users()
            .delete_user(with_session(
                api::DeleteUserRequest {
                    username: username.to_string(),
                },
                token,
            ))
            .await?;
        Ok(())
    }

    /// `Users.LockUser`.
    pub async fn lock_user(&self, token: &str, username: &str) -> Result<api::User, BackendError> {
        Ok(self
            .users()
            .lock_user(with_session(
                api::LockUserRequest {
                    username: username.to_string(),
                },
                token,
            ))
            .await?
            .into_inner())
    }

    /// `Users.UnlockUser`.
    pub async fn unlock_user(
        &self,
        token: &str,
        username: &str,
    ) -> Result<api::User, BackendError> {
        Ok(self
            .users()
            .unlock_user(with_session(
                api::UnlockUserRequest {
                    username: username.to_string(),
                },
                token,
            ))
            .await?
            .into_inner())
    }

    /// `Users.RestoreUser` (an account pending deletion).
    pub async fn restore_user(
        &self,
        token: &str,
        username: &str,
    ) -> Result<api::User, BackendError> {
        Ok(self
            .users()
            .restore_user(with_session(
                api::RestoreUserRequest {
                    username: username.to_string(),
                },
                token,
            ))
            .await?
            .into_inner())
    }

    /// `Users.CreatePasswordReset`; `ttl_seconds` 0 means one day.
    pub async fn create_password_reset(
        &self,
        token: &str,
        username: &str,
        ttl_seconds: i64,
    ) -> Result<api::Invitation, BackendError> {
        Ok(self
            .users()
            .create_password_reset(with_session(
                api::CreatePasswordResetRequest {
                    username: username.to_string(),
                    ttl_seconds,
                },
                token,
            ))
            .await?
            .into_inner())
    }

    /// `Users.GetUserDebugInfo`.
    pub async fn user_debug_info(
        &self,
        token: &str,
        username: &str,
    ) -> Result<api::UserDebugInfo, BackendError> {
        Ok(self
            .users()
            .get_user_debug_info(with_session(
                api::GetUserDebugInfoRequest {
                    username: username.to_string(),
                },
                token,
            ))
            .await?
            .into_inner())
    }

    /// `System.GetServerInfo`.
    pub async fn server_info(&self, token: &str) -> Result<api::ServerInfo, BackendError> {
        Ok(self
            .system()
            .get_server_info(with_session(api::GetServerInfoRequest {}, token))
            .await?
            .into_inner())
    }

    /// `System.SendAnnouncement`; the number of accounts addressed.
    pub async fn announce(
        &self,
        token: &str,
        body: &str,
        recipients: api::AnnouncementRecipients,
    ) -> Result<i64, BackendError> {
        Ok(self
            .system()
            .send_announcement(with_session(
                api::SendAnnouncementRequest {
                    body: body.to_string(),
                    recipients: recipients as i32,
                },
                token,
            ))
            .await?
            .into_inner()
            .recipients)
    }
}
