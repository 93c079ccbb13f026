//! `snikket-loadgen`: XMPP client load generator for the issue-3 benchmark (logins, idle
//! sessions, 1:1 messages) and account pre-creation for our server and Prosody.

mod accounts;
mod client;
mod procfs;
mod scram;

use anyhow::{bail, Result};
use clap::{Args, Parser, Subcommand};
use client::{login, Session, Target};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::sync::Semaphore;

#[derive(Parser)]
#[command(about = "XMPP load generator (loopback only; stops by itself)")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Pre-creates bench accounts `<prefix>00000..`.
    Mkaccounts {
        #[arg(long)]
        count: usize,
        /// SQLite store of our server (DATA_DIR/server/snikket.sqlite).
        #[arg(long)]
        sqlite: Option<PathBuf>,
        /// Prosody accounts directory (DATA/<host>/accounts).
        #[arg(long)]
        prosody_accounts: Option<PathBuf>,
        #[arg(long, default_value = "u")]
        prefix: String,
        #[arg(long, default_value = "bench-password")]
        password: String,
        /// Salt shared by all accounts (plain ASCII), so clients may cache SaltedPassword.
        #[arg(long, default_value = "snikket-loadgen-salt")]
        salt: String,
        #[arg(long, default_value_t = 4096)]
        iterations: u32,
    },
    /// N logins (STARTTLS, SCRAM, bind, presence) with C concurrent, each closed once online.
    Logins {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 1000)]
        count: usize,
    },
    /// Holds K idle authenticated sessions and reports the server's RSS delta per session.
    Idle {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 1000)]
        sessions: usize,
        /// Seconds to wait before reading RSS.
        #[arg(long, default_value_t = 2)]
        settle: u64,
    },
    /// U online users in pairs sending timestamped chat messages to their partner.
    Messages {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 1000)]
        users: usize,
        /// Target total messages/s; 0 = as fast as the window allows.
        #[arg(long, default_value_t = 0)]
        rate: u64,
        /// Seconds of sending.
        #[arg(long, default_value_t = 10)]
        duration: u64,
        /// Most messages in flight per sender.
        #[arg(long, default_value_t = 4)]
        window: usize,
    },
}

#[derive(Args, Clone)]
struct Common {
    /// c2s address (loopback only).
    #[arg(long)]
    addr: SocketAddr,
    #[arg(long)]
    domain: String,
    /// PEM file with the certificate(s) to trust.
    #[arg(long)]
    ca: PathBuf,
    #[arg(long, default_value = "bench-password")]
    password: String,
    #[arg(long, default_value = "u")]
    prefix: String,
    /// Number of pre-created accounts.
    #[arg(long, default_value_t = 1000)]
    accounts: usize,
    #[arg(long, default_value_t = 50)]
    concurrency: usize,
    /// Server process to read CPU time and RSS from.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Per-step timeout in seconds.
    #[arg(long, default_value_t = 10)]
    timeout: u64,
    /// Loopback source addresses to spread connections over (127.1.1.1, ...; 0 = default).
    #[arg(long, default_value_t = 200)]
    source_ips: usize,
    /// Hard limit on the whole run in seconds.
    #[arg(long, default_value_t = 120)]
    max_secs: u64,
}

impl Common {
    fn target(&self) -> Result<Target> {
        if !self.addr.ip().is_loopback() {
            bail!("only loopback targets are allowed");
        }
        Ok(Target {
            addr: self.addr,
            domain: self.domain.clone(),
            tls: client::tls_config(&self.ca)?,
            password: self.password.clone(),
            timeout: Duration::from_secs(self.timeout),
            source_ips: self.source_ips.min(250 * 200),
        })
    }
    fn user(&self, i: usize) -> String {
        format!("{}{:05}", self.prefix, i % self.accounts.max(1))
    }
}

fn names(prefix: &str, count: usize) -> Vec<String> {
    (0..count).map(|i| format!("{prefix}{i:05}")).collect()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// CPU snapshot of both processes.
struct Cpu {
    own: f64,
    server: Option<f64>,
}

impl Cpu {
    fn now(pid: Option<u32>) -> Cpu {
        Cpu {
            own: procfs::cpu_seconds("self").unwrap_or(f64::NAN),
            server: procfs::server_cpu(pid),
        }
    }
    /// Prints CPU deltas, total and per unit (ms).
    fn report(&self, pid: Option<u32>, units: u64, unit: &str) {
        let end = Cpu::now(pid);
        let own = end.own - self.own;
        let n = units.max(1) as f64;
        println!("loadgen_cpu_s={own:.3}");
        println!("loadgen_cpu_ms_per_{unit}={:.4}", own * 1000.0 / n);
        if let (Some(a), Some(b)) = (self.server, end.server) {
            println!("server_cpu_s={:.3}", b - a);
            println!("server_cpu_ms_per_{unit}={:.4}", (b - a) * 1000.0 / n);
        }
    }
}

/// Logs in users `first..first+count` with `concurrency` workers; returns sessions (if kept)
/// and time-to-online samples in ms.
async fn login_many(
    common: &Common,
    target: &Target,
    first: usize,
    count: usize,
    keep: bool,
) -> (Vec<(usize, Session)>, Vec<f64>, usize) {
    let next = Arc::new(AtomicUsize::new(0));
    let out = Arc::new(Mutex::new((Vec::new(), Vec::new(), 0usize)));
    let mut tasks = Vec::new();
    for _ in 0..common.concurrency.clamp(1, count.max(1)) {
        let (next, out, target, common) =
            (next.clone(), out.clone(), target.clone(), common.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    break;
                }
                let started = Instant::now();
                let res = login(&target, &common.user(first + i)).await;
                let ms = started.elapsed().as_secs_f64() * 1000.0;
                match res {
                    Ok(s) => {
                        let kept = if keep {
                            Some(s)
                        } else {
                            tokio::spawn(client::close(s));
                            None
                        };
                        if let Ok(mut o) = out.lock() {
                            o.1.push(ms);
                            if let Some(s) = kept {
                                o.0.push((first + i, s));
                            }
                        }
                    }
                    Err(e) => {
                        if let Ok(mut o) = out.lock() {
                            if o.2 < 3 {
                                eprintln!("login error: {e:#}");
                            }
                            o.2 += 1;
                        }
                    }
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let taken = match out.lock() {
        Ok(mut o) => std::mem::take(&mut *o),
        Err(_) => (Vec::new(), Vec::new(), 0),
    };
    taken
}

fn print_latencies(prefix: &str, mut samples: Vec<f64>) {
    samples.sort_by(|a, b| a.total_cmp(b));
    println!("{prefix}_p50_ms={:.3}", percentile(&samples, 0.50));
    println!("{prefix}_p99_ms={:.3}", percentile(&samples, 0.99));
    println!(
        "{prefix}_max_ms={:.3}",
        samples.last().copied().unwrap_or(f64::NAN)
    );
}

async fn run_logins(common: Common, count: usize) -> Result<()> {
    let target = common.target()?;
    let cpu = Cpu::now(common.server_pid);
    let started = Instant::now();
    let (_, samples, errors) = login_many(&common, &target, 0, count, false).await;
    let secs = started.elapsed().as_secs_f64();
    println!("logins_ok={}", samples.len());
    println!("logins_failed={errors}");
    println!("logins_per_s={:.1}", samples.len() as f64 / secs);
    let ok = samples.len() as u64;
    print_latencies("online", samples);
    cpu.report(common.server_pid, ok, "login");
    Ok(())
}

async fn run_idle(common: Common, sessions: usize, settle: u64) -> Result<()> {
    let target = common.target()?;
    let pid = common.server_pid.map(|p| p.to_string());
    let rss0 = pid.as_deref().map(procfs::rss_kib).transpose()?;
    let (held, samples, errors) = login_many(&common, &target, 0, sessions, true).await;
    tokio::time::sleep(Duration::from_secs(settle)).await;
    let rss1 = pid.as_deref().map(procfs::rss_kib).transpose()?;
    println!("idle_sessions={}", held.len());
    println!("idle_failed={errors}");
    if let (Some(a), Some(b)) = (rss0, rss1) {
        println!("server_rss_before_kib={a}");
        println!("server_rss_after_kib={b}");
        println!(
            "server_kib_per_session={:.2}",
            (b as f64 - a as f64) / held.len().max(1) as f64
        );
    }
    print_latencies("online", samples);
    for (_, s) in held {
        client::close(s).await;
    }
    Ok(())
}

async fn run_messages(
    common: Common,
    users: usize,
    rate: u64,
    duration: u64,
    window: usize,
) -> Result<()> {
    let users = users & !1;
    if users < 2 {
        bail!("need at least 2 users");
    }
    let target = common.target()?;
    let (mut held, _, errors) = login_many(&common, &target, 0, users, true).await;
    if errors > 0 || held.len() != users {
        bail!("only {} of {users} users online", held.len());
    }
    held.sort_by_key(|(i, _)| *i);
    let epoch = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let received = Arc::new(AtomicU64::new(0));
    let in_window = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let latencies = Arc::new(Mutex::new(Vec::<f64>::new()));
    let sems: Vec<Arc<Semaphore>> = (0..users)
        .map(|_| Arc::new(Semaphore::new(window.max(1))))
        .collect();
    let deadline = Duration::from_secs(duration);
    let per_user_interval = (rate > 0).then(|| Duration::from_secs_f64(users as f64 / rate as f64));
    let cpu = Cpu::now(common.server_pid);
    let mut readers = Vec::new();
    let mut writers = Vec::new();
    for (i, session) in held {
        let (mut reader, mut writer) = session.split();
        let partner_sem = sems[i ^ 1].clone();
        let done = done.clone();
        let (received, in_window, errors, latencies) = (
            received.clone(),
            in_window.clone(),
            errors.clone(),
            latencies.clone(),
        );
        readers.push(tokio::spawn(async move {
            let mut local = Vec::new();
            while !done.load(Ordering::Relaxed) {
                let el =
                    match tokio::time::timeout(Duration::from_millis(100), reader.next_element())
                        .await
                    {
                        Ok(Ok(el)) => el,
                        Ok(Err(_)) => break,
                        Err(_) => continue,
                    };
                if el.name() != "message" {
                    continue;
                }
                if el.attr("type") == Some("error") {
                    errors.fetch_add(1, Ordering::Relaxed);
                    partner_sem.add_permits(1);
                    continue;
                }
                let Some(t) = el.get_child("body", "jabber:client").and_then(|b| {
                    b.text()
                        .strip_prefix("t=")
                        .and_then(|t| t.parse::<u64>().ok())
                }) else {
                    continue;
                };
                let now = epoch.elapsed();
                let lat = now.as_micros() as f64 / 1000.0 - t as f64 / 1000.0;
                local.push(lat);
                received.fetch_add(1, Ordering::Relaxed);
                if now <= deadline {
                    in_window.fetch_add(1, Ordering::Relaxed);
                }
                partner_sem.add_permits(1);
                if local.len() >= 256 {
                    if let Ok(mut l) = latencies.lock() {
                        l.append(&mut local);
                    }
                }
            }
            if let Ok(mut l) = latencies.lock() {
                l.append(&mut local);
            }
        }));
        let sem = sems[i].clone();
        let to = format!("{}@{}/lg", common.user(i ^ 1), common.domain);
        let (stop, sent) = (stop.clone(), sent.clone());
        writers.push(tokio::spawn(async move {
            let mut ticker = per_user_interval.map(|d| {
                let mut t = tokio::time::interval_at(
                    tokio::time::Instant::now() + d.mul_f64(rand::random::<f64>()),
                    d,
                );
                t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                t
            });
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                if let Some(t) = ticker.as_mut() {
                    t.tick().await;
                }
                let Ok(Ok(permit)) =
                    tokio::time::timeout(Duration::from_millis(200), sem.acquire()).await
                else {
                    continue;
                };
                permit.forget();
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                n += 1;
                let stanza = format!(
                    "<message to='{to}' type='chat' id='m{n}'><body>t={}</body></message>",
                    epoch.elapsed().as_micros()
                );
                if writer.write_all(stanza.as_bytes()).await.is_err() {
                    break;
                }
                sent.fetch_add(1, Ordering::Relaxed);
            }
            writer
        }));
    }
    tokio::time::sleep(deadline).await;
    stop.store(true, Ordering::Relaxed);
    let mut halves = Vec::new();
    for w in writers {
        if let Ok(w) = w.await {
            halves.push(w);
        }
    }
    let drain_until = Instant::now() + Duration::from_secs(5);
    while received.load(Ordering::Relaxed) + errors.load(Ordering::Relaxed)
        < sent.load(Ordering::Relaxed)
        && Instant::now() < drain_until
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let total = received.load(Ordering::Relaxed);
    cpu.report(common.server_pid, total, "message");
    done.store(true, Ordering::Relaxed);
    for r in readers {
        let _ = r.await;
    }
    for mut w in halves {
        let _ = w.write_all(b"</stream:stream>").await;
    }
    println!("messages_sent={}", sent.load(Ordering::Relaxed));
    println!("messages_received={total}");
    println!("messages_errors={}", errors.load(Ordering::Relaxed));
    println!(
        "messages_per_s={:.1}",
        in_window.load(Ordering::Relaxed) as f64 / duration.max(1) as f64
    );
    let samples = match latencies.lock() {
        Ok(mut l) => std::mem::take(&mut *l),
        Err(_) => Vec::new(),
    };
    print_latencies("delivery", samples);
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Mkaccounts {
            count,
            sqlite,
            prosody_accounts,
            prefix,
            password,
            salt,
            iterations,
        } => {
            if !salt.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                bail!("salt must be ASCII letters, digits and '-'");
            }
            let names = names(&prefix, count);
            if let Some(path) = sqlite {
                let n =
                    accounts::create_sqlite(&path, &names, &password, &salt, iterations).await?;
                println!("sqlite_accounts_created={n}");
            }
            if let Some(dir) = prosody_accounts {
                let n = accounts::create_prosody(&dir, &names, &password, &salt, iterations)?;
                println!("prosody_accounts_created={n}");
            }
            Ok(())
        }
        Cmd::Logins { common, count } => {
            bounded(common.max_secs, run_logins(common.clone(), count)).await
        }
        Cmd::Idle {
            common,
            sessions,
            settle,
        } => bounded(common.max_secs, run_idle(common.clone(), sessions, settle)).await,
        Cmd::Messages {
            common,
            users,
            rate,
            duration,
            window,
        } => {
            bounded(
                common.max_secs,
                run_messages(common.clone(), users, rate, duration, window),
            )
            .await
        }
    }
}

async fn bounded(max_secs: u64, fut: impl std::future::Future<Output = Result<()>>) -> Result<()> {
    match tokio::time::timeout(Duration::from_secs(max_secs), fut).await {
        Ok(r) => r,
        Err(_) => bail!("run exceeded --max-secs {max_secs}"),
    }
}
