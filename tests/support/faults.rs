//! Faults on loopback, for the fault tests: a TCP proxy between the functions and an emulator
//! (moto, localstripe) that breaks a share of the requests it carries, and a webhook relay that
//! plays a sender that retries and delivers each webhook several times at once.
//!
//! The proxy reads each HTTP/1.1 request's head and `Content-Length` body from the client (so
//! faults hit requests, not just connections, on kept-alive connections) and copies answers
//! back unparsed. Per request it draws, from a seeded generator, one of:
//! - **reset before**: the connection is reset (RST) before the request reaches the server;
//! - **reset after**: the request is forwarded, then the connection is reset while the answer
//!   may be on its way (the server may have acted; the client cannot know);
//! - **stall**: the request is forwarded and its answer held past the client's timeout, then
//!   the connection is reset;
//! - **500** and **429**: an error answer the service could give, without forwarding (in the
//!   service's own error format: AWS JSON, S3 XML or Stripe JSON);
//! - or it passes.
//!
//! [`Proxy::blackout`] plays the emulator killed and restarted: the listener is closed (new
//! connections are refused), every open connection is reset, and after the outage the port is
//! listened on again with the state intact. A real restart of moto would lose its state (it
//! keeps it in memory) and localstripe's saved state is one file per machine, so the outage is
//! made at the proxy, which the functions cannot tell from the process going away.

use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The share of requests (per mille) each fault hits, and how long a stall lasts.
#[derive(Debug, Clone)]
pub struct FaultPlan {
    pub reset_before: u32,
    pub reset_after: u32,
    pub stall: u32,
    pub error_500: u32,
    pub throttle_429: u32,
    /// Longer than the client's read timeout.
    pub stall_for: Duration,
    pub seed: u64,
}

impl FaultPlan {
    /// No faults: every request passes.
    pub fn none() -> Self {
        Self {
            reset_before: 0,
            reset_after: 0,
            stall: 0,
            error_500: 0,
            throttle_429: 0,
            stall_for: Duration::ZERO,
            seed: 1,
        }
    }
}

/// What a request met.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    Pass,
    ResetBefore,
    ResetAfter,
    Stall,
    Error500,
    Throttle429,
    /// A connection refused or cut by a blackout.
    Blackout,
}

/// Counts of what the proxy did, by fault.
#[derive(Debug, Default)]
struct Stats {
    by_fault: Mutex<BTreeMap<Fault, u64>>,
    connections: AtomicU64,
    blackouts: AtomicU64,
}

impl Stats {
    fn count(&self, fault: Fault) {
        if let Ok(mut m) = self.by_fault.lock() {
            *m.entry(fault).or_default() += 1;
        }
    }
}

/// A seeded xorshift generator: the same seed draws the same sequence of faults.
#[derive(Debug)]
struct Draw(AtomicU64);

impl Draw {
    fn next(&self) -> u64 {
        let mut x = self.0.load(Ordering::Relaxed);
        loop {
            let mut y = x;
            y ^= y << 13;
            y ^= y >> 7;
            y ^= y << 17;
            match self
                .0
                .compare_exchange_weak(x, y, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return y,
                Err(seen) => x = seen,
            }
        }
    }

    fn fault(&self, plan: &FaultPlan) -> Fault {
        let mut roll = (self.next() % 1000) as u32;
        for (share, fault) in [
            (plan.reset_before, Fault::ResetBefore),
            (plan.reset_after, Fault::ResetAfter),
            (plan.stall, Fault::Stall),
            (plan.error_500, Fault::Error500),
            (plan.throttle_429, Fault::Throttle429),
        ] {
            if roll < share {
                return fault;
            }
            roll -= share;
        }
        Fault::Pass
    }
}

/// A fault-injecting proxy to one upstream address.
pub struct Proxy {
    /// `http://127.0.0.1:{port}`: what the functions are given instead of the emulator's URL.
    pub url: String,
    name: String,
    stats: Arc<Stats>,
    outage: tokio::sync::mpsc::UnboundedSender<Duration>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `upstream` (`http://host:port`).
    pub async fn start(name: &str, upstream: &str, plan: FaultPlan) -> Result<Self> {
        let upstream: SocketAddr = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .parse()
            .with_context(|| format!("upstream {upstream} is not http://ip:port"))?;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let stats = Arc::new(Stats::default());
        let (outage, mut outages) = tokio::sync::mpsc::unbounded_channel::<Duration>();
        let draw = Arc::new(Draw(AtomicU64::new(plan.seed.max(1))));
        let plan = Arc::new(plan);
        let task = {
            let stats = stats.clone();
            tokio::spawn(async move {
                // Set when a blackout cuts the connections of the listener before it.
                let mut cut = Arc::new(AtomicBool::new(false));
                let mut listener = Some(listener);
                while let Some(l) = listener.as_ref() {
                    tokio::select! {
                        accepted = l.accept() => {
                            let Ok((client, _)) = accepted else { continue };
                            stats.connections.fetch_add(1, Ordering::Relaxed);
                            tokio::spawn(connection(
                                client,
                                upstream,
                                plan.clone(),
                                draw.clone(),
                                stats.clone(),
                                cut.clone(),
                            ));
                        }
                        down = outages.recv() => {
                            let Some(down) = down else { break };
                            stats.blackouts.fetch_add(1, Ordering::Relaxed);
                            listener = None; // refused from now on
                            cut.store(true, Ordering::SeqCst);
                            cut = Arc::new(AtomicBool::new(false));
                            tokio::time::sleep(down).await;
                            for _ in 0..100 {
                                if let Ok(l) = TcpListener::bind(addr).await {
                                    listener = Some(l);
                                    break;
                                }
                                tokio::time::sleep(Duration::from_millis(50)).await;
                            }
                        }
                    }
                }
            })
        };
        Ok(Self {
            url: format!("http://{addr}"),
            name: name.to_owned(),
            stats,
            outage,
            task,
        })
    }

    /// Refuses connections and cuts the open ones for `down`, then listens again.
    pub fn blackout(&self, down: Duration) {
        let _ = self.outage.send(down);
    }

    /// What the proxy did: requests by fault, connections and blackouts.
    pub fn summary(&self) -> ProxySummary {
        ProxySummary {
            name: self.name.clone(),
            by_fault: self
                .stats
                .by_fault
                .lock()
                .map(|m| m.clone())
                .unwrap_or_default(),
            connections: self.stats.connections.load(Ordering::Relaxed),
            blackouts: self.stats.blackouts.load(Ordering::Relaxed),
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A proxy's counts, for the test's report.
#[derive(Debug, Clone)]
pub struct ProxySummary {
    pub name: String,
    pub by_fault: BTreeMap<Fault, u64>,
    pub connections: u64,
    pub blackouts: u64,
}

impl ProxySummary {
    pub fn requests(&self) -> u64 {
        self.by_fault
            .iter()
            .filter(|(f, _)| **f != Fault::Blackout)
            .map(|(_, n)| n)
            .sum()
    }

    /// Requests that met a fault other than a blackout.
    pub fn faulted(&self) -> u64 {
        self.by_fault
            .iter()
            .filter(|(f, _)| !matches!(f, Fault::Pass | Fault::Blackout))
            .map(|(_, n)| n)
            .sum()
    }
}

impl std::fmt::Display for ProxySummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} requests on {} connections, {} blackouts;",
            self.name,
            self.requests(),
            self.connections,
            self.blackouts
        )?;
        for (fault, n) in &self.by_fault {
            write!(f, " {fault:?} {n}")?;
        }
        Ok(())
    }
}

/// One HTTP/1.1 request's head, read from a client.
struct Head {
    bytes: Vec<u8>,
    /// `Content-Length`, or `None` for a chunked body (then the rest is copied unparsed).
    body_len: Option<usize>,
    /// The AWS JSON protocols name their operation in `X-Amz-Target`.
    amz_json: bool,
    /// A Stripe API call (its paths are `/v1/...`).
    stripe: bool,
    /// The S3 REST protocol (neither of the above, an AWS request).
    aws: bool,
}

/// Reads one request head from `r` into `buf` (which may already hold bytes); `None` at the
/// end of the connection.
async fn read_head<R: AsyncRead + Unpin>(r: &mut R, buf: &mut Vec<u8>) -> Option<Head> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let bytes: Vec<u8> = buf.drain(..end + 4).collect();
            let text = String::from_utf8_lossy(&bytes).to_ascii_lowercase();
            let header = |name: &str| {
                text.lines()
                    .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_owned()))
            };
            let chunked = header("transfer-encoding:").is_some_and(|v| v.contains("chunked"));
            let body_len = if chunked {
                None
            } else {
                Some(
                    header("content-length:")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0),
                )
            };
            let first = text.lines().next().unwrap_or_default().to_owned();
            return Some(Head {
                body_len,
                amz_json: header("x-amz-target:").is_some(),
                stripe: first.contains(" /v1/"),
                aws: header("authorization:").is_some_and(|v| v.starts_with("aws4")),
                bytes,
            });
        }
        let mut chunk = [0u8; 16 * 1024];
        match r.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Reads exactly `len` body bytes (some may be in `buf` already).
async fn read_body<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
    len: usize,
) -> Option<Vec<u8>> {
    while buf.len() < len {
        let mut chunk = [0u8; 64 * 1024];
        match r.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    Some(buf.drain(..len).collect())
}

/// The answer a service gives for an internal error (500) or throttling (429), in its format.
fn error_answer(head: &Head, status: u16) -> Vec<u8> {
    let (reason, content_type, body) = match (status, head) {
        (500, h) if h.stripe => (
            "Internal Server Error",
            "application/json",
            r#"{"error":{"type":"api_error","message":"injected fault"}}"#.to_owned(),
        ),
        (_, h) if h.stripe => (
            "Too Many Requests",
            "application/json",
            r#"{"error":{"type":"rate_limit_error","message":"injected fault"}}"#.to_owned(),
        ),
        (500, h) if h.amz_json => (
            "Internal Server Error",
            "application/x-amz-json-1.0",
            r#"{"__type":"InternalServerError","message":"injected fault"}"#.to_owned(),
        ),
        (_, h) if h.amz_json => (
            "Too Many Requests",
            "application/x-amz-json-1.0",
            r#"{"__type":"ThrottlingException","message":"injected fault"}"#.to_owned(),
        ),
        (500, _) => (
            "Internal Server Error",
            "application/xml",
            "<Error><Code>InternalError</Code><Message>injected fault</Message></Error>".to_owned(),
        ),
        // S3 throttles with 503 SlowDown.
        _ => (
            "Service Unavailable",
            "application/xml",
            "<Error><Code>SlowDown</Code><Message>injected fault</Message></Error>".to_owned(),
        ),
    };
    let status = if !head.stripe && !head.amz_json && status == 429 && head.aws {
        503
    } else {
        status
    };
    format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Resets a connection (RST, not FIN): what a crashed peer or a dropped route looks like.
fn reset(client: &tokio::net::tcp::OwnedReadHalf) {
    let stream: &TcpStream = client.as_ref();
    let _ = stream.set_zero_linger();
}

async fn connection(
    client: TcpStream,
    upstream: SocketAddr,
    plan: Arc<FaultPlan>,
    draw: Arc<Draw>,
    stats: Arc<Stats>,
    cut: Arc<AtomicBool>,
) {
    let Ok(server) = TcpStream::connect(upstream).await else {
        let _ = client.set_zero_linger();
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut client_read, client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    // Shared: an injected error answer is written on the same half as the relayed ones.
    let client_write = Arc::new(tokio::sync::Mutex::new(client_write));
    // Answers flow back unparsed, unless a stall holds them.
    let held = Arc::new(AtomicBool::new(false));
    let back = {
        let (held, client_write) = (held.clone(), client_write.clone());
        tokio::spawn(async move {
            let mut chunk = vec![0u8; 64 * 1024];
            loop {
                let n = match server_read.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                while held.load(Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                if client_write
                    .lock()
                    .await
                    .write_all(&chunk[..n])
                    .await
                    .is_err()
                {
                    break;
                }
            }
        })
    };
    let mut buf = Vec::new();
    let cut_now = || cut.load(Ordering::SeqCst);
    loop {
        let head = tokio::select! {
            h = read_head(&mut client_read, &mut buf) => h,
            _ = wait_for(&cut) => None,
        };
        let Some(head) = head else { break };
        if cut_now() {
            stats.count(Fault::Blackout);
            reset(&client_read);
            break;
        }
        let Some(len) = head.body_len else {
            // A chunked body: copied as it comes, no more faults on this connection.
            stats.count(Fault::Pass);
            let _ = server_write.write_all(&head.bytes).await;
            let _ = server_write.write_all(&buf).await;
            let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
            break;
        };
        let Some(body) = read_body(&mut client_read, &mut buf, len).await else {
            break;
        };
        let fault = draw.fault(&plan);
        stats.count(fault);
        match fault {
            Fault::ResetBefore => {
                reset(&client_read);
                break;
            }
            Fault::Error500 | Fault::Throttle429 => {
                // The previous answer is complete (the client sent a new request), so
                // nothing else is on its way back.
                let status = if fault == Fault::Error500 { 500 } else { 429 };
                back.abort();
                let mut w = client_write.lock().await;
                let _ = w.write_all(&error_answer(&head, status)).await;
                let _ = w.shutdown().await;
                return;
            }
            _ => {}
        }
        if server_write.write_all(&head.bytes).await.is_err()
            || server_write.write_all(&body).await.is_err()
        {
            reset(&client_read);
            break;
        }
        match fault {
            Fault::ResetAfter => {
                // Somewhere between "not answered yet" and "answered in part".
                tokio::time::sleep(Duration::from_millis(draw.next() % 40)).await;
                reset(&client_read);
                break;
            }
            Fault::Stall => {
                held.store(true, Ordering::SeqCst);
                tokio::select! {
                    _ = tokio::time::sleep(plan.stall_for) => {}
                    _ = wait_for(&cut) => {}
                }
                reset(&client_read);
                break;
            }
            _ => {}
        }
    }
    back.abort();
}

/// Resolves once `flag` is set (polled: blackouts are rare and coarse).
async fn wait_for(flag: &AtomicBool) {
    while !flag.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What the webhook relay delivered: each webhook's body and the answers its deliveries got.
#[derive(Debug, Clone)]
pub struct Relayed {
    pub body: Vec<u8>,
    /// Statuses of every delivery and retry (0: no answer).
    pub statuses: Vec<u16>,
}

impl Relayed {
    /// Whether the intake accepted it (any delivery answered 2xx).
    pub fn accepted(&self) -> bool {
        self.statuses.iter().any(|s| (200..300).contains(s))
    }
}

/// A webhook sender that retries: it takes each webhook from localstripe (answering 200 at
/// once, as a queueing sender does), delivers it `copies` times concurrently to `target` with
/// the same headers and body, and retries each delivery that did not get a 2xx, with backoff,
/// for up to `give_up_after` (inside the signature's 5-minute tolerance, so the original
/// signature still holds).
pub struct Relay {
    pub url: String,
    delivered: Arc<Mutex<Vec<Relayed>>>,
    in_flight: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    pub async fn start(target: String, copies: usize, give_up_after: Duration) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let delivered = Arc::new(Mutex::new(Vec::new()));
        let in_flight = Arc::new(AtomicU64::new(0));
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()?;
        let task = {
            let delivered = delivered.clone();
            let in_flight = in_flight.clone();
            tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let (target, http) = (target.clone(), http.clone());
                    let (delivered, in_flight) = (delivered.clone(), in_flight.clone());
                    tokio::spawn(async move {
                        let (mut r, mut w) = stream.into_split();
                        let mut buf = Vec::new();
                        while let Some(head) = read_head(&mut r, &mut buf).await {
                            let Some(body) =
                                read_body(&mut r, &mut buf, head.body_len.unwrap_or(0)).await
                            else {
                                return;
                            };
                            let _ = w
                                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                                .await;
                            in_flight.fetch_add(1, Ordering::SeqCst);
                            let statuses =
                                relay_one(&http, &target, &head, &body, copies, give_up_after)
                                    .await;
                            if let Ok(mut d) = delivered.lock() {
                                d.push(Relayed { body, statuses });
                            }
                            in_flight.fetch_sub(1, Ordering::SeqCst);
                        }
                    });
                }
            })
        };
        Ok(Self {
            url,
            delivered,
            in_flight,
            task,
        })
    }

    /// Every webhook relayed so far (once all its deliveries and retries are done).
    pub fn delivered(&self) -> Vec<Relayed> {
        self.delivered.lock().map(|d| d.clone()).unwrap_or_default()
    }

    /// Webhooks still being delivered or retried.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::SeqCst)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Delivers one webhook `copies` times at once, each retried until a 2xx or `give_up_after`.
async fn relay_one(
    http: &reqwest::Client,
    target: &str,
    head: &Head,
    body: &[u8],
    copies: usize,
    give_up_after: Duration,
) -> Vec<u16> {
    let text = String::from_utf8_lossy(&head.bytes).into_owned();
    let headers: Vec<(String, String)> = text
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .filter(|(k, _)| {
            let k = k.to_ascii_lowercase();
            k == "content-type" || k.starts_with("stripe-") || k.starts_with("webhook-")
        })
        .collect();
    let deliveries = (0..copies.max(1)).map(|_| async {
        let mut statuses = Vec::new();
        let give_up = tokio::time::Instant::now() + give_up_after;
        let mut wait = Duration::from_millis(250);
        loop {
            let mut req = http.post(target).body(body.to_vec());
            for (k, v) in &headers {
                req = req.header(k.as_str(), v.as_str());
            }
            let status = match req.send().await {
                Ok(resp) => resp.status().as_u16(),
                Err(_) => 0,
            };
            statuses.push(status);
            if (200..300).contains(&status)
                || (400..500).contains(&status)
                || tokio::time::Instant::now() + wait > give_up
            {
                return statuses;
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(8));
        }
    });
    futures::future::join_all(deliveries)
        .await
        .into_iter()
        .flatten()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An upstream that answers every request with `200` and the request's body.
    async fn echo() -> (String, Arc<AtomicU64>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(AtomicU64::new(0));
        let counter = seen.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let counter = counter.clone();
                tokio::spawn(async move {
                    let (mut r, mut w) = stream.into_split();
                    let mut buf = Vec::new();
                    while let Some(head) = read_head(&mut r, &mut buf).await {
                        let body = read_body(&mut r, &mut buf, head.body_len.unwrap_or(0))
                            .await
                            .unwrap();
                        counter.fetch_add(1, Ordering::SeqCst);
                        let mut answer =
                            format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len())
                                .into_bytes();
                        answer.extend_from_slice(&body);
                        if w.write_all(&answer).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (url, seen)
    }

    fn only(fault: Fault) -> FaultPlan {
        let mut plan = FaultPlan::none();
        plan.stall_for = Duration::from_secs(2);
        match fault {
            Fault::ResetBefore => plan.reset_before = 1000,
            Fault::ResetAfter => plan.reset_after = 1000,
            Fault::Stall => plan.stall = 1000,
            Fault::Error500 => plan.error_500 = 1000,
            Fault::Throttle429 => plan.throttle_429 = 1000,
            Fault::Pass | Fault::Blackout => {}
        }
        plan
    }

    async fn post(
        client: &reqwest::Client,
        url: &str,
        target: Option<&str>,
    ) -> reqwest::Result<(u16, String)> {
        let mut req = client.post(format!("{url}/x")).body("hello");
        if let Some(t) = target {
            req = req.header("x-amz-target", t);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        Ok((status, resp.text().await?))
    }

    fn client() -> reqwest::Client {
        reqwest::Client::builder()
            .timeout(Duration::from_millis(800))
            .build()
            .unwrap()
    }

    #[tokio::test]
    async fn each_fault_does_what_it_says_and_passing_requests_arrive_intact() {
        let (upstream, seen) = echo().await;
        let pass = Proxy::start("pass", &upstream, FaultPlan::none())
            .await
            .unwrap();
        let c = client();
        for _ in 0..3 {
            assert_eq!(
                post(&c, &pass.url, None).await.unwrap(),
                (200, "hello".to_owned())
            );
        }
        assert_eq!(pass.summary().by_fault.get(&Fault::Pass), Some(&3));

        let before = seen.load(Ordering::SeqCst);
        let reset = Proxy::start("reset", &upstream, only(Fault::ResetBefore))
            .await
            .unwrap();
        assert!(post(&c, &reset.url, None).await.is_err());
        assert_eq!(
            seen.load(Ordering::SeqCst),
            before,
            "never reached the server"
        );

        let after = Proxy::start("after", &upstream, only(Fault::ResetAfter))
            .await
            .unwrap();
        let _ = post(&c, &after.url, None).await;
        assert_eq!(seen.load(Ordering::SeqCst), before + 1, "the server got it");

        let stall = Proxy::start("stall", &upstream, only(Fault::Stall))
            .await
            .unwrap();
        let err = post(&c, &stall.url, None).await.unwrap_err();
        assert!(err.is_timeout(), "{err}");
        assert_eq!(seen.load(Ordering::SeqCst), before + 2, "the server got it");

        let e500 = Proxy::start("500", &upstream, only(Fault::Error500))
            .await
            .unwrap();
        let (status, body) = post(&c, &e500.url, Some("DynamoDB_20120810.PutItem"))
            .await
            .unwrap();
        assert_eq!(status, 500);
        assert!(body.contains("InternalServerError"), "{body}");
        let e429 = Proxy::start("429", &upstream, only(Fault::Throttle429))
            .await
            .unwrap();
        let (status, body) = post(&c, &e429.url, Some("AmazonSQS.SendMessage"))
            .await
            .unwrap();
        assert_eq!(status, 429);
        assert!(body.contains("ThrottlingException"), "{body}");
        assert_eq!(
            seen.load(Ordering::SeqCst),
            before + 2,
            "error answers never reach the server"
        );
    }

    #[tokio::test]
    async fn a_blackout_refuses_then_the_same_address_serves_again() {
        let (upstream, _) = echo().await;
        let proxy = Proxy::start("blackout", &upstream, FaultPlan::none())
            .await
            .unwrap();
        let c = client();
        assert_eq!(post(&c, &proxy.url, None).await.unwrap().0, 200);
        proxy.blackout(Duration::from_millis(700));
        tokio::time::sleep(Duration::from_millis(200)).await;
        let fresh = client();
        assert!(post(&fresh, &proxy.url, None).await.is_err(), "refused");
        tokio::time::sleep(Duration::from_millis(900)).await;
        assert_eq!(post(&fresh, &proxy.url, None).await.unwrap().0, 200);
        assert_eq!(proxy.summary().blackouts, 1);
    }

    #[test]
    fn the_same_seed_draws_the_same_faults() {
        let plan = FaultPlan {
            reset_before: 100,
            reset_after: 100,
            stall: 100,
            error_500: 100,
            throttle_429: 100,
            stall_for: Duration::ZERO,
            seed: 7,
        };
        let draws = |seed| {
            let d = Draw(AtomicU64::new(seed));
            (0..1000).map(|_| d.fault(&plan)).collect::<Vec<_>>()
        };
        assert_eq!(draws(7), draws(7));
        assert_ne!(draws(7), draws(8));
        let passes = draws(7).iter().filter(|f| **f == Fault::Pass).count();
        assert!((400..600).contains(&passes), "about half pass: {passes}");
    }
}
