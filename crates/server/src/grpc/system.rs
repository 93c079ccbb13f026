//! `System`: version, uptime, user activity and announcements for the system page (spec 5.5.6).

use super::{fail, internal, AdminApi};
use snikket_rpc::snikket::admin::v1 as pb;
use snikket_store::days_ago;
use tonic::{Code, Request, Response, Status};

/// Longest announcement accepted, in bytes.
const MAX_ANNOUNCEMENT: usize = 10_000;

#[tonic::async_trait]
impl pb::system_server::System for AdminApi {
    async fn get_server_info(
        &self,
        request: Request<pb::GetServerInfoRequest>,
    ) -> Result<Response<pb::ServerInfo>, Status> {
        self.admin(&request).await?;
        let store = self.store();
        let active = |days| async move { store.active_account_count(days_ago(days)).await };
        let started_at = self.inner.started_at;
        let usage = snikket_runtime::procstat::self_usage();
        Ok(Response::new(pb::ServerInfo {
            memory_bytes: usage.map(|u| u.rss_bytes),
            cpu_seconds: usage.map(|u| u.cpu_seconds),
            upload_bytes: store.uploads_total_bytes().await.ok(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            site_name: self.config().site_name.clone(),
            domain: self.config().domain.unicode.clone(),
            started_at,
            uptime_seconds: snikket_store::now().saturating_sub(started_at).max(0),
            users_total: store.account_count().await.map_err(internal)?,
            active_1d: active(1).await.map_err(internal)?,
            active_7d: active(7).await.map_err(internal)?,
            active_30d: active(30).await.map_err(internal)?,
            connected_now: self
                .live()
                .ok()
                .map(|s| i64::try_from(s.router.online().1).unwrap_or(i64::MAX)),
        }))
    }

    async fn send_announcement(
        &self,
        request: Request<pb::SendAnnouncementRequest>,
    ) -> Result<Response<pb::SendAnnouncementResponse>, Status> {
        let caller = self.admin(&request).await?;
        let req = request.into_inner();
        let body = req.body.trim();
        if body.is_empty() || body.len() > MAX_ANNOUNCEMENT {
            return Err(fail(
                Code::InvalidArgument,
                "invalid-argument",
                "the message must have 1 to 10000 bytes",
            ));
        }
        let state = self.live()?;
        let users: Vec<String> = match pb::AnnouncementRecipients::try_from(req.recipients) {
            Ok(pb::AnnouncementRecipients::Preview) => vec![caller.username.clone()],
            Ok(pb::AnnouncementRecipients::Online) => state.router.online().0,
            Ok(pb::AnnouncementRecipients::All) => self
                .store()
                .accounts()
                .await
                .map_err(internal)?
                .into_iter()
                .map(|a| a.username)
                .collect(),
            _ => {
                return Err(fail(
                    Code::InvalidArgument,
                    "invalid-argument",
                    "no recipients given",
                ))
            }
        };
        let domain = &self.config().domain.ascii;
        for user in &users {
            let to = format!("{user}@{domain}");
            let id = format!("announce-{:016x}", rand::random::<u64>());
            let msg = crate::xml::el(
                "message",
                crate::xml::NS_CLIENT,
                &[
                    ("from", domain),
                    ("to", &to),
                    ("type", "normal"),
                    ("id", &id),
                ],
                vec![crate::xml::text_el("body", crate::xml::NS_CLIENT, body)],
            );
            crate::routing::deliver_message(state, user, None, "normal", msg).await;
        }
        tracing::info!(admin = %caller.username, recipients = users.len(), "announcement sent");
        Ok(Response::new(pb::SendAnnouncementResponse {
            recipients: i64::try_from(users.len()).unwrap_or(i64::MAX),
        }))
    }
}
