//! `PublicInvites`: invitation lookup and web registration for the portal's invite pages (spec 5.6).
//!
//! No user session, only the internal secret. Registration follows the XMPP path
//! (`c2s/register.rs`): validate, consume the invitation first, then create the account.

use super::{fail, internal, AdminApi};
use snikket_rpc::snikket::admin::v1 as pb;
use snikket_store::{Invite, InviteKind, StoreError};
use snikket_xmpp::AccountError;
use tonic::{Code, Request, Response, Status};

fn not_found() -> Status {
    fail(
        Code::NotFound,
        "invite-not-found",
        "unknown, expired or used invitation",
    )
}

impl AdminApi {
    async fn pending_invite(&self, token: &str) -> Result<Invite, Status> {
        let token = token.trim();
        if token.is_empty() || token.len() > 128 {
            return Err(not_found());
        }
        match self.store().check_invite(token).await.map_err(internal)? {
            Ok(invite) if invite.kind != InviteKind::Contact || invite.inviter.is_some() => {
                Ok(invite)
            }
            _ => Err(not_found()),
        }
    }
}

fn account_error(e: &AccountError) -> Status {
    match e {
        AccountError::InvalidUsername => fail(Code::InvalidArgument, "invalid-username", e.text()),
        AccountError::PasswordTooShort => fail(Code::InvalidArgument, "weak-password", e.text()),
        AccountError::PasswordContainsUsername => fail(
            Code::InvalidArgument,
            "password-contains-username",
            e.text(),
        ),
    }
}

#[tonic::async_trait]
impl pb::public_invites_server::PublicInvites for AdminApi {
    async fn get_invite(
        &self,
        request: Request<pb::GetInviteRequest>,
    ) -> Result<Response<pb::PublicInvite>, Status> {
        let invite = self.pending_invite(&request.get_ref().token).await?;
        let reset = invite.kind == InviteKind::Reset;
        let inviter = invite.inviter.clone().unwrap_or_default();
        let username = invite.username.clone().unwrap_or_default();
        let expires_at = invite.expires_at;
        let full = self.invitation_message(invite);
        Ok(Response::new(pb::PublicInvite {
            site_name: self.config().site_name.clone(),
            inviter,
            kind: full.kind,
            expires_at,
            reset,
            username,
            xmpp_uri: full.xmpp_uri,
            landing_url: full.landing_url,
            domain: self.config().domain.unicode.clone(),
        }))
    }

    async fn register(
        &self,
        request: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        let req = request.into_inner();
        let invite = self.pending_invite(&req.token).await?;
        let wanted = match (&invite.kind, &invite.username) {
            (_, Some(fixed)) => fixed.clone(),
            _ => req.username.trim().to_string(),
        };
        let username =
            snikket_xmpp::account::validate_localpart(&wanted).map_err(|e| account_error(&e))?;
        snikket_xmpp::account::check_password(&req.password, Some(&username))
            .map_err(|e| account_error(&e))?;
        let creds = crate::c2s::register::credentials_for(&req.password).map_err(|_| {
            fail(
                Code::InvalidArgument,
                "weak-password",
                "password not acceptable",
            )
        })?;
        let store = self.store();
        let jid = format!("{username}@{}", self.config().domain.ascii);
        if invite.kind == InviteKind::Reset {
            store
                .use_invite(&invite.invite_id)
                .await
                .map_err(internal)?;
            store
                .set_credentials(&username, &creds)
                .await
                .map_err(internal)?;
            tracing::info!(user = %username, "password reset through the portal");
            return Ok(Response::new(pb::RegisterResponse { username, jid }));
        }
        if store.account(&username).await.map_err(internal)?.is_some() {
            return Err(fail(
                Code::AlreadyExists,
                "username-taken",
                "username already exists",
            ));
        }
        // Consume before creating: a single-use invite must never create two accounts.
        match store.use_invite(&invite.invite_id).await {
            Ok(()) => {}
            Err(StoreError::Conflict(_)) => return Err(not_found()),
            Err(e) => return Err(internal(e)),
        }
        match store
            .create_account(&username, invite.role, &creds, Some(&invite.invite_id))
            .await
        {
            Ok(_) => {}
            Err(StoreError::Conflict(_)) => {
                return Err(fail(
                    Code::AlreadyExists,
                    "username-taken",
                    "username already exists",
                ))
            }
            Err(e) => return Err(internal(e)),
        }
        let changes = crate::onboarding::after_registration(
            store,
            &self.config().domain.ascii,
            &username,
            &invite,
        )
        .await;
        // An online inviter gets the roster push at once (before the XMPP side runs there is
        // nobody online to tell).
        if let Ok(state) = self.live() {
            for change in changes {
                crate::routing::push_item(
                    state,
                    &change.owner,
                    &change.item,
                    change.version,
                    false,
                );
            }
        }
        tracing::info!(user = %username, invite = %invite.invite_id, "account registered through the portal");
        Ok(Response::new(pb::RegisterResponse { username, jid }))
    }
}
