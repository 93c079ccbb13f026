//! Shared-secret authentication for internal gRPC calls.

use crate::RpcError;
use std::net::SocketAddr;
use std::sync::Arc;
use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;
use tonic::{Request, Status};

/// The metadata key carrying the secret.
pub const AUTHORIZATION: &str = "authorization";

/// Refuses any address that is not loopback.
pub fn check_loopback(addr: SocketAddr) -> Result<SocketAddr, RpcError> {
    if addr.ip().is_loopback() {
        Ok(addr)
    } else {
        Err(RpcError::NotLoopback(addr))
    }
}

/// Server-side interceptor: the call must carry `authorization: Bearer <secret>`.
#[derive(Clone)]
pub struct SecretCheck {
    expected: Arc<Vec<u8>>,
}

impl SecretCheck {
    /// Checks against `secret`.
    pub fn new(secret: &str) -> Self {
        SecretCheck {
            expected: Arc::new(format!("Bearer {secret}").into_bytes()),
        }
    }
}

impl std::fmt::Debug for SecretCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretCheck(***)")
    }
}

impl Interceptor for SecretCheck {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        use subtle::ConstantTimeEq;
        let given = req
            .metadata()
            .get(AUTHORIZATION)
            .map(|v| v.as_bytes())
            .unwrap_or(b"");
        if given.len() == self.expected.len() && bool::from(given.ct_eq(self.expected.as_slice())) {
            Ok(req)
        } else {
            tracing::warn!("internal api call with a missing or wrong secret");
            Err(Status::unauthenticated("missing or wrong internal secret"))
        }
    }
}

/// Client-side interceptor adding the secret to every call.
#[derive(Clone)]
pub struct SecretHeader {
    value: MetadataValue<tonic::metadata::Ascii>,
}

impl SecretHeader {
    /// Sends `secret`. Fails only if the secret is not a valid header value.
    pub fn new(secret: &str) -> Result<Self, Status> {
        let value = format!("Bearer {secret}")
            .parse()
            .map_err(|_| Status::invalid_argument("secret is not a valid header value"))?;
        Ok(SecretHeader { value })
    }
}

impl std::fmt::Debug for SecretHeader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretHeader(***)")
    }
}

impl Interceptor for SecretHeader {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        req.metadata_mut().insert(AUTHORIZATION, self.value.clone());
        Ok(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_only() {
        assert!(check_loopback("127.0.0.1:5290".parse().unwrap()).is_ok());
        assert!(check_loopback("[::1]:5290".parse().unwrap()).is_ok());
        assert!(check_loopback("0.0.0.0:5290".parse().unwrap()).is_err());
        assert!(check_loopback("192.168.1.2:5290".parse().unwrap()).is_err());
    }

    #[test]
    fn secret_check_accepts_only_the_secret() {
        let mut check = SecretCheck::new("s3cret");
        let mut header = SecretHeader::new("s3cret").unwrap();
        let ok = header.call(Request::new(())).unwrap();
        assert!(check.call(ok).is_ok());
        let mut wrong = SecretHeader::new("s3creT").unwrap();
        let bad = wrong.call(Request::new(())).unwrap();
        assert_eq!(
            check.call(bad).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        assert_eq!(
            check.call(Request::new(())).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        assert!(!format!("{check:?}{header:?}").contains("s3cret"));
    }
}
