//! `Profile`: the signed-in user's own display name and password (spec 5.4.3, 5.4.4).

use super::users::MAX_DISPLAY_NAME;
use super::{fail, internal, store_user, AdminApi};
use snikket_rpc::snikket::admin::v1 as pb;
use tonic::{Code, Request, Response, Status};

/// Minimum length of a new password, in characters (the portal's rule, spec 5.4.3).
const MIN_PASSWORD_CHARS: usize = 10;
/// Longest accepted password, in bytes.
const MAX_PASSWORD_BYTES: usize = 1024;

#[tonic::async_trait]
impl pb::profile_server::Profile for AdminApi {
    async fn get_profile(
        &self,
        request: Request<pb::GetProfileRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let caller = self.caller(&request).await?;
        Ok(Response::new(self.user_by_name(&caller.username).await?))
    }

    async fn set_display_name(
        &self,
        request: Request<pb::SetDisplayNameRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let caller = self.caller(&request).await?;
        let name = request.get_ref().display_name.trim();
        if name.len() > MAX_DISPLAY_NAME {
            return Err(fail(
                Code::InvalidArgument,
                "invalid-argument",
                "display name is too long",
            ));
        }
        self.store()
            .set_display_name(&caller.username, (!name.is_empty()).then_some(name))
            .await
            .map_err(store_user)?;
        Ok(Response::new(self.user_by_name(&caller.username).await?))
    }

    async fn change_password(
        &self,
        request: Request<pb::ChangePasswordRequest>,
    ) -> Result<Response<pb::ChangePasswordResponse>, Status> {
        let caller = self.caller(&request).await?;
        let req = request.into_inner();
        if req.old_password.len() > MAX_PASSWORD_BYTES
            || !self
                .verify_password(&caller.username, &req.old_password)
                .await?
        {
            tracing::info!(user = %caller.username, "password change refused: wrong old password");
            return Err(fail(
                Code::PermissionDenied,
                "wrong-password",
                "incorrect password",
            ));
        }
        if req.new_password.chars().count() < MIN_PASSWORD_CHARS
            || req.new_password.len() > MAX_PASSWORD_BYTES
        {
            return Err(fail(
                Code::InvalidArgument,
                "weak-password",
                "the new password must have from 10 characters to 1024 bytes",
            ));
        }
        let credentials = self.credentials_for(&req.new_password).await?;
        self.store()
            .set_credentials(&caller.username, &credentials)
            .await
            .map_err(store_user)?;
        let revoked = self
            .store()
            .revoke_portal_sessions_of(&caller.username, Some(&caller.token))
            .await
            .map_err(internal)?;
        tracing::info!(user = %caller.username, revoked_sessions = revoked, "password changed");
        Ok(Response::new(pb::ChangePasswordResponse {}))
    }
}
