//! `Users`: the admin panel's user list, edit, lock, restore, delete, reset link, debug page
//! (spec 5.5.2, 5.5.3).

use super::{account_change, fail, internal, role_from_pb, store_user, user_not_found, AdminApi};
use snikket_rpc::snikket::admin::v1 as pb;
use snikket_store::{AccountState, InviteKind, NewInvite};
use tonic::{Code, Request, Response, Status};

/// Longest accepted display name, in bytes.
pub(crate) const MAX_DISPLAY_NAME: usize = 1024;

/// Default and longest lifetime of a password-reset link.
const RESET_TTL: i64 = 86_400;
const MAX_TTL: i64 = 28 * 86_400;

impl AdminApi {
    /// Unlock and restore are the same change: the account becomes active again (which also
    /// clears a pending self-deletion).
    async fn reactivate<T>(
        &self,
        request: &Request<T>,
        username: &str,
        what: &'static str,
    ) -> Result<Response<pb::User>, Status> {
        let caller = self.admin(request).await?;
        let username = self.localpart(username)?;
        self.store()
            .set_account_state(&username, AccountState::Active)
            .await
            .map_err(store_user)?;
        tracing::info!(admin = %caller.username, user = %username, "{what}");
        Ok(Response::new(self.user_by_name(&username).await?))
    }
}

#[tonic::async_trait]
impl pb::users_server::Users for AdminApi {
    async fn list_users(
        &self,
        request: Request<pb::ListUsersRequest>,
    ) -> Result<Response<pb::ListUsersResponse>, Status> {
        self.admin(&request).await?;
        let accounts = self.store().accounts().await.map_err(internal)?;
        let mut users = Vec::with_capacity(accounts.len());
        for account in accounts {
            users.push(self.user_message(account).await?);
        }
        Ok(Response::new(pb::ListUsersResponse { users }))
    }

    async fn get_user(
        &self,
        request: Request<pb::GetUserRequest>,
    ) -> Result<Response<pb::User>, Status> {
        self.admin(&request).await?;
        let username = self.localpart(&request.get_ref().username)?;
        Ok(Response::new(self.user_by_name(&username).await?))
    }

    async fn update_user(
        &self,
        request: Request<pb::UpdateUserRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let caller = self.admin(&request).await?;
        let req = request.into_inner();
        let username = self.localpart(&req.username)?;
        let role = role_from_pb(req.role)?;
        if let Some(name) = &req.display_name {
            if name.len() > MAX_DISPLAY_NAME {
                return Err(fail(
                    Code::InvalidArgument,
                    "invalid-argument",
                    "display name is too long",
                ));
            }
        }
        if self
            .store()
            .account(&username)
            .await
            .map_err(internal)?
            .is_none()
        {
            return Err(user_not_found());
        }
        if let Some(role) = role {
            self.store()
                .set_role(&username, role)
                .await
                .map_err(account_change)?;
        }
        if let Some(name) = req.display_name {
            let name = name.trim();
            self.store()
                .set_display_name(&username, (!name.is_empty()).then_some(name))
                .await
                .map_err(store_user)?;
        }
        tracing::info!(admin = %caller.username, user = %username, role = ?role, "user updated");
        Ok(Response::new(self.user_by_name(&username).await?))
    }

    async fn delete_user(
        &self,
        request: Request<pb::DeleteUserRequest>,
    ) -> Result<Response<pb::DeleteUserResponse>, Status> {
        let caller = self.admin(&request).await?;
        let username = self.localpart(&request.get_ref().username)?;
        self.store()
            .delete_account(&username)
            .await
            .map_err(account_change)?;
        tracing::info!(admin = %caller.username, user = %username, "user deleted");
        Ok(Response::new(pb::DeleteUserResponse {}))
    }

    async fn lock_user(
        &self,
        request: Request<pb::LockUserRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let caller = self.admin(&request).await?;
        let username = self.localpart(&request.get_ref().username)?;
        self.store()
            .lock_account(&username)
            .await
            .map_err(account_change)?;
        self.store()
            .revoke_portal_sessions_of(&username, None)
            .await
            .map_err(internal)?;
        tracing::info!(admin = %caller.username, user = %username, "user locked");
        Ok(Response::new(self.user_by_name(&username).await?))
    }

    async fn unlock_user(
        &self,
        request: Request<pb::UnlockUserRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let username = request.get_ref().username.clone();
        self.reactivate(&request, &username, "user unlocked").await
    }

    async fn restore_user(
        &self,
        request: Request<pb::RestoreUserRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let username = request.get_ref().username.clone();
        self.reactivate(&request, &username, "user restored").await
    }

    async fn create_password_reset(
        &self,
        request: Request<pb::CreatePasswordResetRequest>,
    ) -> Result<Response<pb::Invitation>, Status> {
        let caller = self.admin(&request).await?;
        let req = request.into_inner();
        let username = self.localpart(&req.username)?;
        let ttl = match req.ttl_seconds {
            0 => RESET_TTL,
            t if (60..=MAX_TTL).contains(&t) => t,
            _ => {
                return Err(fail(
                    Code::InvalidArgument,
                    "invalid-argument",
                    "ttl_seconds must be from 60 to 2419200",
                ))
            }
        };
        let account = self
            .store()
            .account(&username)
            .await
            .map_err(internal)?
            .ok_or_else(user_not_found)?;
        let invite = self
            .store()
            .create_invite(NewInvite {
                kind: InviteKind::Reset,
                inviter: Some(caller.username.clone()),
                username: Some(username.clone()),
                role: account.role,
                circles: Vec::new(),
                note: None,
                source: format!("{}/admin_api", self.jid(&caller.username)),
                ttl_secs: ttl,
            })
            .await
            .map_err(internal)?;
        tracing::info!(admin = %caller.username, user = %username, invite_id = %invite.invite_id, "password reset link created");
        Ok(Response::new(self.invitation_message(invite)))
    }

    async fn get_user_debug_info(
        &self,
        request: Request<pb::GetUserDebugInfoRequest>,
    ) -> Result<Response<pb::UserDebugInfo>, Status> {
        self.admin(&request).await?;
        let username = self.localpart(&request.get_ref().username)?;
        let user = self.user_by_name(&username).await?;
        // Sessions, push registrations and OMEMO state come from the XMPP side once it exists.
        Ok(Response::new(pb::UserDebugInfo {
            time: snikket_store::now(),
            user: Some(user),
            sessions: Vec::new(),
            push_registrations: Vec::new(),
            omemo: Some(pb::OmemoStatus::default()),
        }))
    }
}
