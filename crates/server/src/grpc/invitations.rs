//! `Invitations`: create, list, show and revoke invitation links (spec 4.4, 5.5.4).

use super::{fail, group_not_found, internal, role_from_pb, AdminApi};
use snikket_rpc::snikket::admin::v1 as pb;
use snikket_store::{Invite, InviteKind, NewInvite, Role, StoreError, DEFAULT_CIRCLE_ID};
use tonic::{Code, Request, Response, Status};

/// Default lifetime of an invitation (spec 4.4: one week).
const DEFAULT_TTL: i64 = 7 * 86_400;
/// Longest lifetime the portal offers (four weeks).
const MAX_TTL: i64 = 28 * 86_400;
/// Longest note, in bytes.
const MAX_NOTE: usize = 1024;

impl AdminApi {
    /// Finds an invitation by its full token (compared in constant time) or its short id.
    async fn find_invite(&self, id: &str) -> Result<Option<Invite>, Status> {
        let id = id.trim();
        if !id.is_ascii() {
            return Ok(None);
        }
        let (lookup, token) = match id.len() {
            8 => (id, None),
            24 => (&id[..8], Some(id)),
            _ => return Ok(None),
        };
        let Some(invite) = self.store().invite(lookup).await.map_err(internal)? else {
            return Ok(None);
        };
        if let Some(token) = token {
            if !super::subtle_eq::ct_eq(invite.token.as_bytes(), token.as_bytes()) {
                return Ok(None);
            }
        }
        Ok(Some(invite))
    }
}

fn invite_not_found() -> Status {
    fail(Code::NotFound, "invite-not-found", "no such invitation")
}

fn is_pending(invite: &Invite) -> bool {
    invite.expires_at >= snikket_store::now() && (invite.reusable || invite.consumed_at.is_none())
}

#[tonic::async_trait]
impl pb::invitations_server::Invitations for AdminApi {
    async fn create_invitation(
        &self,
        request: Request<pb::CreateInvitationRequest>,
    ) -> Result<Response<pb::Invitation>, Status> {
        let caller = self.caller(&request).await?;
        let req = request.into_inner();
        let kind = match pb::InvitationKind::try_from(req.kind) {
            Ok(pb::InvitationKind::Unspecified | pb::InvitationKind::Account) => {
                InviteKind::Account
            }
            Ok(pb::InvitationKind::Group) => InviteKind::Group,
            Ok(pb::InvitationKind::Contact) => InviteKind::Contact,
            Ok(pb::InvitationKind::PasswordReset) | Err(_) => {
                return Err(fail(
                    Code::InvalidArgument,
                    "invalid-argument",
                    "kind must be account, group or contact",
                ))
            }
        };
        let role = role_from_pb(req.role)?;
        let denied = |why: &str| {
            fail(
                Code::PermissionDenied,
                "permission-denied",
                format_args!("{why}"),
            )
        };
        match caller.role {
            Role::Admin => {}
            Role::Limited => return Err(denied("limited users cannot create invitations")),
            Role::Normal => {
                if kind != InviteKind::Contact {
                    return Err(denied("only administrators can create account invitations"));
                }
                if role.is_some_and(|r| r != Role::Normal) || !req.circles.is_empty() {
                    return Err(denied("only administrators can choose a role or circles"));
                }
            }
        }
        let ttl = match req.ttl_seconds {
            0 => DEFAULT_TTL,
            t if (60..=MAX_TTL).contains(&t) => t,
            _ => {
                return Err(fail(
                    Code::InvalidArgument,
                    "invalid-argument",
                    "ttl_seconds must be from 60 to 2419200",
                ))
            }
        };
        if req.note.len() > MAX_NOTE {
            return Err(fail(
                Code::InvalidArgument,
                "invalid-argument",
                "note is too long",
            ));
        }
        let mut circles: Vec<String> = req.circles.iter().map(|c| c.trim().to_string()).collect();
        circles.sort();
        circles.dedup();
        if kind == InviteKind::Contact && circles.is_empty() {
            circles.push(DEFAULT_CIRCLE_ID.to_string());
        }
        let note = req.note.trim();
        let invite = self
            .store()
            .create_invite(NewInvite {
                kind,
                inviter: Some(caller.username.clone()),
                username: None,
                role: role.unwrap_or(Role::Normal),
                circles,
                note: (!note.is_empty()).then(|| note.to_string()),
                source: format!("{}/admin_api", self.jid(&caller.username)),
                ttl_secs: ttl,
            })
            .await
            .map_err(|e| match e {
                StoreError::NotFound { .. } => group_not_found(),
                e => internal(e),
            })?;
        tracing::info!(user = %caller.username, invite_id = %invite.invite_id, kind = kind.as_str(), "invitation created");
        Ok(Response::new(self.invitation_message(invite)))
    }

    async fn list_invitations(
        &self,
        request: Request<pb::ListInvitationsRequest>,
    ) -> Result<Response<pb::ListInvitationsResponse>, Status> {
        self.admin(&request).await?;
        let include_resets = request.get_ref().include_password_resets;
        let invitations = self
            .store()
            .pending_invites()
            .await
            .map_err(internal)?
            .into_iter()
            .filter(|i| include_resets || i.kind != InviteKind::Reset)
            .map(|i| self.invitation_message(i))
            .collect();
        Ok(Response::new(pb::ListInvitationsResponse { invitations }))
    }

    async fn get_invitation(
        &self,
        request: Request<pb::GetInvitationRequest>,
    ) -> Result<Response<pb::Invitation>, Status> {
        self.admin(&request).await?;
        let invite = self
            .find_invite(&request.get_ref().id)
            .await?
            .filter(is_pending)
            .ok_or_else(invite_not_found)?;
        Ok(Response::new(self.invitation_message(invite)))
    }

    async fn revoke_invitation(
        &self,
        request: Request<pb::RevokeInvitationRequest>,
    ) -> Result<Response<pb::RevokeInvitationResponse>, Status> {
        let caller = self.admin(&request).await?;
        let invite = self
            .find_invite(&request.get_ref().id)
            .await?
            .ok_or_else(invite_not_found)?;
        if !self
            .store()
            .delete_invite(&invite.invite_id)
            .await
            .map_err(internal)?
        {
            return Err(invite_not_found());
        }
        tracing::info!(admin = %caller.username, invite_id = %invite.invite_id, "invitation revoked");
        Ok(Response::new(pb::RevokeInvitationResponse {}))
    }
}
