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
        let domain = self.config().domain.ascii.clone();
        let (sessions, error_count) = match self.live() {
            Ok(state) => {
                let sessions = state
                    .router
                    .sessions(&username)
                    .into_iter()
                    .map(|x| debug_session(state, &domain, &username, x))
                    .collect();
                let push = &state.push;
                (sessions, Some(push))
            }
            Err(_) => (Vec::new(), None),
        };
        let push_registrations = self
            .store()
            .push_registrations(&username)
            .await
            .map_err(internal)?
            .into_iter()
            .map(|r| pb::PushRegistration {
                id: format!("{}<{}>", r.service, abbreviate(&r.node)),
                since: r.created_at,
                error_count: error_count
                    .map(|p| p.error_count(&username, &r.service, &r.node))
                    .unwrap_or(0),
                service: r.service,
                // Node names identify a device at the push service: not shown in full.
                node: abbreviate(&r.node),
                client_id: r.client_id,
                encrypted: false,
            })
            .collect();
        Ok(Response::new(pb::UserDebugInfo {
            time: snikket_store::now(),
            user: Some(user),
            sessions,
            push_registrations,
            omemo: Some(
                omemo_status(self.store(), &username)
                    .await
                    .map_err(internal)?,
            ),
        }))
    }
}

/// One live session as the debug page shows it.
fn debug_session(
    state: &crate::state::State,
    domain: &str,
    username: &str,
    x: crate::router::SessionInfo,
) -> pb::DebugSession {
    let mut features = Vec::new();
    if x.carbons {
        features.push("carbons".to_string());
    }
    if state.push.enabled(username, &x.resource) {
        features.push("push_notifications".to_string());
    }
    pb::DebugSession {
        full_jid: format!("{username}@{domain}/{}", x.resource),
        ip: String::new(),
        since: x.since,
        connected: x.connected,
        active: x.available,
        features,
        held_stanzas: 0,
        awaiting_acks: 0,
    }
}

/// The first few characters of a secret-ish identifier.
fn abbreviate(s: &str) -> String {
    let head: String = s.chars().take(6).collect();
    if head.len() < s.len() {
        format!("{head}…")
    } else {
        head
    }
}

const OMEMO_LEGACY: &str = "eu.siacs.conversations.axolotl";
const OMEMO_LEGACY_DEVICES: &str = "eu.siacs.conversations.axolotl.devicelist";
const OMEMO_LEGACY_BUNDLES: &str = "eu.siacs.conversations.axolotl.bundles:";
const OMEMO: &str = "urn:xmpp:omemo:2";
const OMEMO_DEVICES: &str = "urn:xmpp:omemo:2:devices";
const OMEMO_BUNDLES: &str = "urn:xmpp:omemo:2:bundles";

/// The account's OMEMO devices (legacy and OMEMO 2) from its PEP nodes: which device ids are
/// listed and whether each has a published bundle. The list is valid when every published
/// device list parses and names only well-formed device ids.
async fn omemo_status(
    store: &snikket_store::Store,
    username: &str,
) -> Result<pb::OmemoStatus, snikket_store::StoreError> {
    let nodes: std::collections::HashSet<String> = store
        .pep_nodes(username)
        .await?
        .into_iter()
        .map(|n| n.node)
        .collect();
    let v2_bundles: std::collections::HashSet<String> = if nodes.contains(OMEMO_BUNDLES) {
        store
            .pep_items(username, OMEMO_BUNDLES, &[], 1000)
            .await?
            .into_iter()
            .map(|i| i.id)
            .collect()
    } else {
        Default::default()
    };
    let mut valid = true;
    let mut devices = Vec::new();
    for (node, ns, list_name) in [
        (OMEMO_LEGACY_DEVICES, OMEMO_LEGACY, "list"),
        (OMEMO_DEVICES, OMEMO, "devices"),
    ] {
        let Some(item) = store
            .pep_items(username, node, &[], 1)
            .await?
            .into_iter()
            .next()
        else {
            continue;
        };
        let Ok(list) = item.payload.parse::<minidom::Element>() else {
            valid = false;
            continue;
        };
        if !list.is(list_name, ns) {
            valid = false;
            continue;
        }
        for d in list.children().filter(|c| c.is("device", ns)) {
            match d.attr("id").and_then(|i| i.parse::<u32>().ok()) {
                Some(id) => {
                    let have_bundle = if ns == OMEMO {
                        v2_bundles.contains(&id.to_string())
                    } else {
                        nodes.contains(&format!("{OMEMO_LEGACY_BUNDLES}{id}"))
                    };
                    devices.push(pb::OmemoDevice {
                        id,
                        have_bundle,
                        valid: true,
                    });
                }
                None => valid = false,
            }
        }
    }
    Ok(pb::OmemoStatus { valid, devices })
}
