//! `System`: version, uptime and user activity for the system page (spec 5.5.6).

use super::{internal, AdminApi};
use snikket_rpc::snikket::admin::v1 as pb;
use snikket_store::days_ago;
use tonic::{Request, Response, Status};

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
        Ok(Response::new(pb::ServerInfo {
            version: env!("CARGO_PKG_VERSION").to_string(),
            site_name: self.config().site_name.clone(),
            domain: self.config().domain.unicode.clone(),
            started_at,
            uptime_seconds: snikket_store::now().saturating_sub(started_at).max(0),
            users_total: store.account_count().await.map_err(internal)?,
            active_1d: active(1).await.map_err(internal)?,
            active_7d: active(7).await.map_err(internal)?,
            active_30d: active(30).await.map_err(internal)?,
        }))
    }
}
