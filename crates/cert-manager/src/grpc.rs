//! The certificate manager's internal gRPC API (`snikket.certs.v1.Certs` and the generic status
//! service) on the loopback gRPC interface, behind the shared-secret check.

use crate::manager::{Manager, RenewRequest};
use snikket_rpc::snikket::certs::v1 as pb;
use snikket_rpc::snikket::status::v1 as status_pb;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};
use tonic::{Request, Response, Status};

/// Serves status and renew requests.
#[derive(Clone)]
pub struct CertsService {
    manager: Arc<Manager>,
    requests: mpsc::Sender<RenewRequest>,
    started_at: i64,
}

impl CertsService {
    /// A service answering from `manager` and forwarding renewals to its loop.
    pub fn new(manager: Arc<Manager>, requests: mpsc::Sender<RenewRequest>) -> Self {
        CertsService {
            manager,
            requests,
            started_at: crate::manager::now(),
        }
    }

    fn snapshot(&self) -> pb::CertStatus {
        let st = self.manager.status();
        let installed = self.manager.layout().read_installed();
        pb::CertStatus {
            names: installed
                .as_ref()
                .map(|i| i.names.clone())
                .unwrap_or_default(),
            not_after: installed.as_ref().map_or(0, |i| i.not_after),
            next_attempt: if self.manager.acme_enabled() {
                st.next_attempt
            } else {
                0
            },
            last_error: st.last_error,
            self_signed: installed.as_ref().is_none_or(|i| i.self_signed),
            acme_enabled: self.manager.acme_enabled(),
            last_success: st.last_success,
            issuer: installed.map(|i| i.issuer).unwrap_or_default(),
        }
    }
}

#[tonic::async_trait]
impl pb::certs_server::Certs for CertsService {
    async fn get_cert_status(
        &self,
        _request: Request<pb::GetCertStatusRequest>,
    ) -> Result<Response<pb::CertStatus>, Status> {
        Ok(Response::new(self.snapshot()))
    }

    async fn renew(
        &self,
        _request: Request<pb::RenewRequest>,
    ) -> Result<Response<pb::RenewResponse>, Status> {
        let (tx, rx) = oneshot::channel();
        self.requests
            .send(tx)
            .await
            .map_err(|_| Status::unavailable("certificate manager is shutting down"))?;
        let outcome = rx
            .await
            .map_err(|_| Status::unavailable("certificate manager is shutting down"))?;
        Ok(Response::new(pb::RenewResponse {
            ok: outcome.ok,
            message: outcome.message,
            status: Some(self.snapshot()),
        }))
    }
}

#[tonic::async_trait]
impl status_pb::status_server::Status for CertsService {
    async fn get_status(
        &self,
        _request: Request<status_pb::GetStatusRequest>,
    ) -> Result<Response<status_pb::GetStatusResponse>, Status> {
        let snap = self.snapshot();
        let healthy = !snap.names.is_empty() && snap.last_error.is_empty();
        Ok(Response::new(status_pb::GetStatusResponse {
            service: "certs".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            started_at: self.started_at,
            healthy,
            detail: snap.last_error,
        }))
    }
}
