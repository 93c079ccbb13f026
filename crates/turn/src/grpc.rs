//! The loopback gRPC API: relay counters (`snikket.turn.v1.TurnStatus`) and the generic
//! `snikket.status.v1.Status`, both behind the shared internal secret.

use crate::server::Server;
use snikket_rpc::snikket::status::v1 as status;
use snikket_rpc::snikket::turn::v1 as turn;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// Serves both services from the shared relay state.
#[derive(Debug, Clone)]
pub struct StatusApi {
    server: Arc<Server>,
    started_at: i64,
    calls_supported: u32,
}

impl StatusApi {
    /// A view of `server`.
    pub fn new(server: Arc<Server>, started_at: i64, calls_supported: u32) -> Self {
        StatusApi {
            server,
            started_at,
            calls_supported,
        }
    }

    /// The current counters.
    pub fn stats(&self) -> turn::GetStatsResponse {
        let s = &self.server.stats;
        let ports = self.server.ports();
        turn::GetStatsResponse {
            allocations: self.server.allocation_count() as u64,
            allocations_total: s.allocations_total.load(Ordering::Relaxed),
            bytes_to_peers: s.bytes_to_peers.load(Ordering::Relaxed),
            bytes_from_peers: s.bytes_from_peers.load(Ordering::Relaxed),
            packets_to_peers: s.packets_to_peers.load(Ordering::Relaxed),
            packets_from_peers: s.packets_from_peers.load(Ordering::Relaxed),
            port_min: u32::from(ports.min()),
            port_max: u32::from(ports.max()),
            ports_in_use: ports.in_use(),
            calls_supported: self.calls_supported,
            auth_failures: s.auth_failures.load(Ordering::Relaxed),
            peers_denied: s.peers_denied.load(Ordering::Relaxed),
            capacity_exhausted: s.capacity_exhausted.load(Ordering::Relaxed),
            quota_rejections: s.quota_rejections.load(Ordering::Relaxed),
            malformed: s.malformed.load(Ordering::Relaxed),
            rate_limited: s.rate_limited.load(Ordering::Relaxed),
            started_at: self.started_at,
        }
    }
}

#[tonic::async_trait]
impl turn::turn_status_server::TurnStatus for StatusApi {
    async fn get_stats(
        &self,
        _req: Request<turn::GetStatsRequest>,
    ) -> Result<Response<turn::GetStatsResponse>, Status> {
        Ok(Response::new(self.stats()))
    }
}

#[tonic::async_trait]
impl status::status_server::Status for StatusApi {
    async fn get_status(
        &self,
        _req: Request<status::GetStatusRequest>,
    ) -> Result<Response<status::GetStatusResponse>, Status> {
        let ports = self.server.ports();
        let full = ports.in_use() >= ports.size();
        Ok(Response::new(status::GetStatusResponse {
            service: "turn".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            started_at: self.started_at,
            healthy: !full,
            detail: if full {
                "relay port range exhausted".into()
            } else {
                String::new()
            },
        }))
    }
}
