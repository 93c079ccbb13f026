//! The `renew` and `status` sub-commands: they ask the running daemon over gRPC, so that only
//! one process ever writes the certificate files.

use snikket_config::Config;
use snikket_rpc::snikket::certs::v1 as pb;
use snikket_rpc::SecretHeader;

/// Connects to the daemon with the shared secret.
async fn connect(
    config: &Config,
) -> anyhow::Result<
    pb::certs_client::CertsClient<
        tonic::service::interceptor::InterceptedService<tonic::transport::Channel, SecretHeader>,
    >,
> {
    use anyhow::Context;
    let secret = snikket_runtime::secret::read_secret(&config.grpc_secret_path())
        .context("reading the internal gRPC secret")?;
    let header = SecretHeader::new(secret.expose()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let url = format!(
        "http://{}:{}",
        match config.grpc_interface {
            std::net::IpAddr::V6(a) => format!("[{a}]"),
            a => a.to_string(),
        },
        config.certs.grpc_port
    );
    let channel = tonic::transport::Endpoint::from_shared(url.clone())?
        .connect_timeout(std::time::Duration::from_secs(5))
        .connect()
        .await
        .with_context(|| format!("connecting to the certificate manager at {url}"))?;
    Ok(pb::certs_client::CertsClient::with_interceptor(
        channel, header,
    ))
}

/// Prints a status in a readable form.
pub fn format_status(s: &pb::CertStatus) -> String {
    let ts = |t: i64| {
        if t == 0 {
            "-".to_string()
        } else {
            time::OffsetDateTime::from_unix_timestamp(t)
                .ok()
                .and_then(|d| {
                    d.format(&time::format_description::well_known::Rfc3339)
                        .ok()
                })
                .unwrap_or_else(|| t.to_string())
        }
    };
    format!(
        "names: {}\nissuer: {}\nself-signed: {}\nexpires: {}\nnext attempt: {}\nlast success: {}\nlast error: {}\n",
        s.names.join(", "),
        s.issuer,
        s.self_signed,
        ts(s.not_after),
        ts(s.next_attempt),
        ts(s.last_success),
        if s.last_error.is_empty() { "-" } else { &s.last_error },
    )
}

/// Forces an attempt; returns whether it succeeded.
pub async fn renew(config: &Config) -> anyhow::Result<bool> {
    let mut client = connect(config).await?;
    let rsp = client.renew(pb::RenewRequest {}).await?.into_inner();
    if rsp.ok {
        println!("OK: {}", rsp.message);
    } else {
        println!("FAILED: {}", rsp.message);
    }
    if let Some(s) = &rsp.status {
        print!("{}", format_status(s));
    }
    Ok(rsp.ok)
}

/// Prints the daemon's status.
pub async fn status(config: &Config) -> anyhow::Result<()> {
    let mut client = connect(config).await?;
    let s = client
        .get_cert_status(pb::GetCertStatusRequest {})
        .await?
        .into_inner();
    print!("{}", format_status(&s));
    Ok(())
}

/// The `healthcheck` command: the daemon answers over gRPC and a certificate (the bootstrap or
/// a CA-issued one) is installed. A failing ACME attempt alone is not unhealthy: the services
/// keep working with the current certificate, and `has-errors` plus the startup page report it.
pub async fn healthcheck(config: &Config) -> Result<(), String> {
    let work = async {
        let mut client = connect(config).await.map_err(|e| format!("{e:#}"))?;
        let s = client
            .get_cert_status(pb::GetCertStatusRequest {})
            .await
            .map_err(|e| format!("certificate manager: {}", e.message()))?
            .into_inner();
        if s.names.is_empty() {
            Err(format!(
                "no certificate installed yet{}",
                if s.last_error.is_empty() {
                    String::new()
                } else {
                    format!(": {}", s.last_error)
                }
            ))
        } else {
            Ok(())
        }
    };
    tokio::time::timeout(snikket_runtime::health::TIMEOUT, work)
        .await
        .unwrap_or_else(|_| Err("certificate manager did not answer in time".into()))
}
