//! `Auth`: portal login with username and password, and logout (spec 5.2, 5.7 calls 2 and 3).

use super::{fail, internal, AdminApi, SESSION_TTL_SECS};
use snikket_rpc::snikket::admin::v1 as pb;
use snikket_store::AccountState;
use tonic::{Code, Request, Response, Status};

#[tonic::async_trait]
impl pb::auth_server::Auth for AdminApi {
    async fn login(
        &self,
        request: Request<pb::LoginRequest>,
    ) -> Result<Response<pb::LoginResponse>, Status> {
        let req = request.into_inner();
        let invalid = || {
            fail(
                Code::Unauthenticated,
                "invalid-credentials",
                "wrong username or password",
            )
        };
        let Ok(username) = self.localpart(&req.username) else {
            return Err(invalid());
        };
        if req.password.is_empty() || req.password.len() > 1024 {
            return Err(invalid());
        }
        if !self.verify_password(&username, &req.password).await? {
            tracing::info!(user = %username, "portal login refused");
            return Err(invalid());
        }
        let account = self
            .store()
            .account(&username)
            .await
            .map_err(internal)?
            .ok_or_else(invalid)?;
        if account.state != AccountState::Active {
            return Err(fail(
                Code::PermissionDenied,
                "account-disabled",
                "the account is locked",
            ));
        }
        let session = self
            .store()
            .create_portal_session(&username, SESSION_TTL_SECS)
            .await
            .map_err(internal)?;
        if let Err(e) = self.store().touch_account(&username).await {
            tracing::warn!(error = %e, "recording last activity failed");
        }
        // Logins are rare, so this is a cheap moment to forget expired sessions.
        match self.store().cleanup_portal_sessions().await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(removed = n, "expired portal sessions removed"),
            Err(e) => tracing::warn!(error = %e, "removing expired portal sessions failed"),
        }
        tracing::info!(user = %username, role = account.role.as_str(), "portal login");
        // The roles a user may assume are exactly its own (spec 4.1).
        let scopes = vec![account.role.as_str().to_string()];
        Ok(Response::new(pb::LoginResponse {
            session_token: session.token,
            jid: self.jid(&username),
            username,
            role: super::role_to_pb(account.role) as i32,
            scopes,
            expires_at: session.session.expires_at,
        }))
    }

    async fn logout(
        &self,
        request: Request<pb::LogoutRequest>,
    ) -> Result<Response<pb::LogoutResponse>, Status> {
        let caller = self.caller(&request).await?;
        self.store()
            .revoke_portal_session(&caller.token)
            .await
            .map_err(internal)?;
        tracing::info!(user = %caller.username, "portal logout");
        Ok(Response::new(pb::LogoutResponse {}))
    }
}
