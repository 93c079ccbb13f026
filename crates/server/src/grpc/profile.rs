//! `Profile`: the signed-in user's own display name and password (spec 5.4.3, 5.4.4), and the
//! profile contacts see: PEP nickname, avatar and their visibility; avatars for the portal.

use super::users::MAX_DISPLAY_NAME;
use super::{fail, internal, store_user, AdminApi};
use base64::Engine;
use sha1::Digest;
use snikket_rpc::snikket::admin::v1 as pb;
use tonic::{Code, Request, Response, Status};

const NODE_NICK: &str = "http://jabber.org/protocol/nick";
const NODE_META: &str = "urn:xmpp:avatar:metadata";
const NODE_DATA: &str = "urn:xmpp:avatar:data";
const NODE_VCARD4: &str = "urn:xmpp:vcard4";
/// The nodes whose visibility the profile page sets.
const PROFILE_NODES: &[&str] = &[NODE_DATA, NODE_META, NODE_VCARD4, NODE_NICK];

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
        // Contacts see the display name as the PEP nickname (XEP-0172).
        let state = self.live()?;
        let nick = crate::xml::text_el("nick", NODE_NICK, name);
        crate::pep::publish_as(state, &caller.username, NODE_NICK, &[], "current", &nick)
            .await
            .map_err(internal)?;
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

    async fn get_profile_details(
        &self,
        request: Request<pb::GetProfileRequest>,
    ) -> Result<Response<pb::ProfileDetails>, Status> {
        let caller = self.caller(&request).await?;
        Ok(Response::new(self.details(&caller.username).await?))
    }

    async fn update_profile(
        &self,
        request: Request<pb::UpdateProfileRequest>,
    ) -> Result<Response<pb::ProfileDetails>, Status> {
        let caller = self.caller(&request).await?;
        let req = request.into_inner();
        let user = caller.username.as_str();
        let access = req.access_model.as_str();
        if !matches!(access, "" | "open" | "presence" | "whitelist") {
            return Err(fail(
                Code::InvalidArgument,
                "invalid-argument",
                "unknown access model",
            ));
        }
        // The portal's `SNIKKET_WEB_MAX_AVATAR_SIZE` (same configuration file) is the limit here too.
        let max_avatar =
            usize::try_from(self.config().portal.max_avatar_size).unwrap_or(usize::MAX);
        if req.avatar.len() > max_avatar {
            return Err(fail(
                Code::InvalidArgument,
                "avatar-too-big",
                "The chosen avatar is too big. To be able to upload larger avatars, please use the app.",
            ));
        }
        let nickname = req.nickname.as_deref().map(str::trim);
        if nickname.is_some_and(|n| n.len() > MAX_DISPLAY_NAME) {
            return Err(fail(
                Code::InvalidArgument,
                "invalid-argument",
                "nickname is too long",
            ));
        }
        let state = self.live()?;
        let defaults: Vec<(&str, &str)> = if access.is_empty() {
            Vec::new()
        } else {
            vec![("access_model", access)]
        };
        let current = self.details(user).await?;
        if !req.avatar.is_empty() {
            let id = crate::vcard::hex(&sha1::Sha1::digest(&req.avatar));
            let mime = if req.avatar_type.is_empty() {
                "image/png"
            } else {
                req.avatar_type.as_str()
            };
            let b64 = base64::engine::general_purpose::STANDARD.encode(&req.avatar);
            crate::vcard::publish_avatar(state, user, &defaults, &id, mime, req.avatar.len(), &b64)
                .await
                .map_err(internal)?;
        }
        if let Some(nickname) = nickname.filter(|n| *n != current.nickname) {
            let nick = crate::xml::text_el("nick", NODE_NICK, nickname);
            crate::pep::publish_as(state, user, NODE_NICK, &defaults, "current", &nick)
                .await
                .map_err(internal)?;
            self.store()
                .set_display_name(user, (!nickname.is_empty()).then_some(nickname))
                .await
                .map_err(store_user)?;
        }
        if !access.is_empty() {
            for node in PROFILE_NODES {
                if let Some(mut n) = self.store().pep_node(user, node).await.map_err(internal)? {
                    n.access_model = access.to_string();
                    self.store()
                        .pep_put_node(user, &n)
                        .await
                        .map_err(internal)?;
                }
            }
        }
        tracing::info!(user = %user, avatar = !req.avatar.is_empty(), "profile updated");
        Ok(Response::new(self.details(user).await?))
    }

    async fn get_avatar(
        &self,
        request: Request<pb::GetAvatarRequest>,
    ) -> Result<Response<pb::Avatar>, Status> {
        let caller = self.caller(&request).await?;
        let not_found = || fail(Code::NotFound, "not-found", "no avatar");
        let domain = &self.config().domain.ascii;
        let owner = jid::BareJid::new(&request.get_ref().jid)
            .ok()
            .filter(|j| j.domain().as_str() == domain)
            .and_then(|j| j.node().map(|n| n.to_string()))
            .ok_or_else(not_found)?;
        let meta_node = self
            .store()
            .pep_node(&owner, NODE_META)
            .await
            .map_err(internal)?;
        let meta_node = meta_node.ok_or_else(not_found)?;
        let allowed = caller.username == owner
            || caller.role == snikket_store::Role::Admin
            || meta_node.access_model == "open"
            || (meta_node.access_model == "presence"
                && self
                    .store()
                    .roster_item(&owner, &format!("{}@{domain}", caller.username))
                    .await
                    .map_err(internal)?
                    .is_some_and(|i| i.subscription.has_from()));
        if !allowed {
            return Err(not_found());
        }
        let (id, mime) = self.avatar_info(&owner).await?.ok_or_else(not_found)?;
        let items = self
            .store()
            .pep_items(&owner, NODE_DATA, std::slice::from_ref(&id), 1)
            .await
            .map_err(internal)?;
        let data = items
            .first()
            .and_then(|i| i.payload.parse::<minidom::Element>().ok())
            .map(|e| {
                e.text()
                    .chars()
                    .filter(|c| !c.is_whitespace())
                    .collect::<String>()
            })
            .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok())
            .ok_or_else(not_found)?;
        Ok(Response::new(pb::Avatar {
            mime_type: mime,
            data,
            sha1: id,
        }))
    }

    async fn export_account_data(
        &self,
        request: Request<pb::ExportAccountDataRequest>,
    ) -> Result<Response<pb::AccountData>, Status> {
        let caller = self.caller(&request).await?;
        let state = self.live()?;
        let doc = crate::xep227::export(state, &caller.username)
            .await
            .map_err(internal)?;
        tracing::info!(user = %caller.username, empty = doc.is_none(), "account data exported");
        Ok(Response::new(pb::AccountData {
            empty: doc.is_none(),
            xml: doc.map(String::into_bytes).unwrap_or_default(),
            jid: format!("{}@{}", caller.username, self.config().domain.ascii),
        }))
    }

    async fn import_account_data(
        &self,
        request: Request<pb::ImportAccountDataRequest>,
    ) -> Result<Response<pb::ImportAccountDataResponse>, Status> {
        let caller = self.caller(&request).await?;
        let state = self.live()?;
        let not_xep227 = || {
            fail(
                Code::InvalidArgument,
                "not-xep227",
                "the data is not a XEP-0227 document with an account in it",
            )
        };
        let doc = std::str::from_utf8(&request.get_ref().xml).map_err(|_| not_xep227())?;
        match crate::xep227::import(state, &caller.username, doc).await {
            Ok(n) => Ok(Response::new(pb::ImportAccountDataResponse {
                roster_items: n.roster_items,
                vcard: n.vcard,
                pep_nodes: n.pep_nodes,
                pep_items: n.pep_items,
                skipped: n.skipped,
            })),
            Err(crate::xep227::ImportError::NotXep227) => Err(not_xep227()),
            Err(crate::xep227::ImportError::Store(e)) => Err(internal(e)),
        }
    }
}

impl AdminApi {
    /// The current avatar's (id, media type), from the newest metadata item.
    pub(crate) async fn avatar_info(&self, user: &str) -> Result<Option<(String, String)>, Status> {
        let items = self
            .store()
            .pep_items(user, NODE_META, &[], 1)
            .await
            .map_err(internal)?;
        Ok(items.first().and_then(|i| {
            let meta = i.payload.parse::<minidom::Element>().ok()?;
            let info = meta.get_child("info", NODE_META)?;
            let id = info.attr("id")?.to_string();
            Some((id, info.attr("type").unwrap_or("image/png").to_string()))
        }))
    }

    /// Nickname, visibility and avatar of `user`.
    async fn details(&self, user: &str) -> Result<pb::ProfileDetails, Status> {
        let store = self.store();
        let nickname = store
            .pep_items(user, NODE_NICK, &[], 1)
            .await
            .map_err(internal)?
            .first()
            .and_then(|i| i.payload.parse::<minidom::Element>().ok())
            .map(|e| e.text())
            .unwrap_or_default();
        // The most open model of the profile nodes that exist (spec 5.4.4); `open` without any.
        let mut access = None;
        for node in &PROFILE_NODES[1..] {
            if let Some(n) = store.pep_node(user, node).await.map_err(internal)? {
                let rank = |m: &str| match m {
                    "open" => 2,
                    "presence" => 1,
                    _ => 0,
                };
                if access
                    .as_deref()
                    .is_none_or(|a: &str| rank(&n.access_model) > rank(a))
                {
                    access = Some(n.access_model);
                }
            }
        }
        Ok(pb::ProfileDetails {
            nickname,
            access_model: access.unwrap_or_else(|| "open".into()),
            avatar_hash: self
                .avatar_info(user)
                .await?
                .map(|a| a.0)
                .unwrap_or_default(),
        })
    }
}
