//! etcd as a benchmark peer: a 3-member cluster of `etcd` child processes on loopback with
//! data on tmpfs, and a one-connection client for its v3 JSON gateway.
//!
//! The client is a minimal HTTP/1.1 client over a tokio `TcpStream` (keep-alive,
//! `Content-Length` requests, `Content-Length` or chunked responses) instead of a gRPC or
//! HTTP client crate: the gateway needs two POSTs, and this keeps the request path as thin
//! as the other backends' clients. The gateway adds JSON and base64 work on etcd's side,
//! which is part of what is measured; say so beside the numbers.
//!
//! Members run with the flags of `shared/BENCHMARKING.md`, plus quiet logs
//! (`--logger zap --log-level error --log-outputs stderr`, all in etcd 3.4 and later),
//! revision compaction (`--auto-compaction-mode revision --auto-compaction-retention
//! 10000`) and an 8 GiB quota (`--quota-backend-bytes`), so that long write runs of 4 KB
//! values do not raise the "database space exceeded" alarm.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use tokio::io::{AsyncBufRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::redis_peer::{
    find_binary, free_loopback_ports, read_line_bounded, spawn_captured, ChildOutput,
};

/// Members in a cluster.
const MEMBERS: usize = 3;
/// How long [`EtcdCluster::start`] waits for every member to accept a put.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one request (write and whole response) may take before the client gives up.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts at starting on fresh ports: another process may take a port between our
/// probe and etcd's bind.
const START_ATTEMPTS: usize = 3;
/// Longest status, header or chunk-size line accepted.
const MAX_LINE: u64 = 16 * 1024;
/// Most header lines accepted in one response.
const MAX_HEADERS: usize = 100;
/// Largest response body accepted.
const MAX_BODY: usize = 64 * 1024 * 1024;
/// Key written through every member to decide that the cluster is ready.
const READY_KEY: &str = "__etcd_bench_ready";

/// Numbers member data directories uniquely within this process.
static NEXT_DIR: AtomicUsize = AtomicUsize::new(1);

/// A 3-member etcd cluster on `127.0.0.1`, each member with its data directory
/// `etcd-bench-<our pid>-<n>` under `/dev/shm` (tmpfs). Dropping it kills every member
/// (SIGKILL, by pid), reaps them and removes their data directories.
#[derive(Debug)]
pub struct EtcdCluster {
    members: Vec<Member>,
}

#[derive(Debug)]
struct Member {
    name: String,
    client_url: String,
    data_dir: PathBuf,
    child: Child,
    output: ChildOutput,
}

impl EtcdCluster {
    /// Starts three members on free loopback ports and returns once a put through each
    /// member's JSON gateway succeeds (bounded by 30 s). Fails if `etcd` is not on `PATH`.
    pub async fn start() -> anyhow::Result<Self> {
        let binary =
            find_binary("etcd").context("etcd not found on PATH (apt-get install etcd-server)")?;
        let mut last_err = anyhow!("etcd was not started");
        for _ in 0..START_ATTEMPTS {
            // A failed attempt is dropped here: its members are killed, its dirs removed.
            let mut cluster = Self {
                members: Vec::new(),
            };
            let started = async {
                cluster.spawn_members(&binary)?;
                cluster.wait_ready().await
            };
            match started.await {
                Ok(()) => {
                    for member in &cluster.members {
                        member.output.pass_through();
                    }
                    return Ok(cluster);
                }
                Err(e) => last_err = e,
            }
        }
        Err(last_err)
    }

    fn spawn_members(&mut self, binary: &Path) -> anyhow::Result<()> {
        let ports = free_loopback_ports(2 * MEMBERS)?;
        let (client_ports, peer_ports) = ports.split_at(MEMBERS);
        let peer_url = |i: usize| format!("http://127.0.0.1:{}", peer_ports[i]);
        let initial_cluster = (0..MEMBERS)
            .map(|i| format!("n{}={}", i + 1, peer_url(i)))
            .collect::<Vec<_>>()
            .join(",");
        let data_root = if Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        for (i, client_port) in client_ports.iter().enumerate() {
            let name = format!("n{}", i + 1);
            let client_url = format!("http://127.0.0.1:{client_port}");
            let data_dir = data_root.join(format!(
                "etcd-bench-{}-{}",
                std::process::id(),
                NEXT_DIR.fetch_add(1, Ordering::Relaxed)
            ));
            // Left over by an earlier process that had our pid and was killed.
            let _ = std::fs::remove_dir_all(&data_dir);
            let mut cmd = Command::new(binary);
            cmd.arg("--name")
                .arg(&name)
                .arg("--data-dir")
                .arg(&data_dir)
                .args(["--listen-client-urls", &client_url])
                .args(["--advertise-client-urls", &client_url])
                .args(["--listen-peer-urls", &peer_url(i)])
                .args(["--initial-advertise-peer-urls", &peer_url(i)])
                .args(["--initial-cluster", &initial_cluster])
                .args(["--initial-cluster-state", "new"])
                .args([
                    "--logger",
                    "zap",
                    "--log-level",
                    "error",
                    "--log-outputs",
                    "stderr",
                ])
                .args(["--auto-compaction-mode", "revision"])
                .args(["--auto-compaction-retention", "10000"])
                .args(["--quota-backend-bytes", "8589934592"]);
            let (child, output) = spawn_captured(cmd, &format!("etcd {name}"))?;
            self.members.push(Member {
                name,
                client_url,
                data_dir,
                child,
                output,
            });
        }
        Ok(())
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let started = Instant::now();
        let mut ready = vec![false; self.members.len()];
        loop {
            for member in &mut self.members {
                if let Some(status) = member.child.try_wait()? {
                    bail!(
                        "etcd {} exited during startup ({status}):\n{}",
                        member.name,
                        member.output.tail()
                    );
                }
            }
            for (member, ready) in self.members.iter().zip(&mut ready) {
                if !*ready {
                    if let Ok(mut client) = EtcdClient::connect(&member.client_url).await {
                        *ready = client.put(READY_KEY, b"").await.is_ok();
                    }
                }
            }
            if ready.iter().all(|r| *r) {
                return Ok(());
            }
            if started.elapsed() > START_TIMEOUT {
                let tails: Vec<String> = self
                    .members
                    .iter()
                    .map(|m| format!("etcd {}:\n{}", m.name, m.output.tail()))
                    .collect();
                bail!(
                    "etcd cluster not ready within {START_TIMEOUT:?}:\n{}",
                    tails.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Every member's client URL (`http://127.0.0.1:<port>`), for [`EtcdClient::connect`]
    /// or `etcdctl --endpoints`.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client_url.clone()).collect()
    }

    /// The members' process ids, e.g. to read their CPU time from `/proc`.
    pub fn pids(&self) -> Vec<u32> {
        self.members.iter().map(|m| m.child.id()).collect()
    }

    /// The installed etcd's version, e.g. `3.4.23`.
    pub fn version() -> anyhow::Result<String> {
        let out = Command::new("etcd").arg("--version").output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines()
            .find_map(|l| l.strip_prefix("etcd Version:"))
            .map(|v| v.trim().to_string())
            .ok_or_else(|| anyhow!("unexpected etcd --version output {text:?}"))
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for member in &mut self.members {
            let _ = member.child.kill();
        }
        for member in &mut self.members {
            let _ = member.child.wait();
            let _ = std::fs::remove_dir_all(&member.data_dir);
        }
    }
}

/// One keep-alive HTTP/1.1 connection to one member's JSON gateway. Requests are sent one
/// at a time. After a failed request the connection is dropped and the next request opens
/// a new one; a failed request is not retried.
#[derive(Debug)]
pub struct EtcdClient {
    /// `host:port` of the member.
    host: String,
    conn: Option<BufReader<TcpStream>>,
    /// Request head and JSON body, reused between calls.
    request: Vec<u8>,
    body: String,
    line: Vec<u8>,
    response: Vec<u8>,
}

/// What [`read_response`] learned besides the body.
#[derive(Debug, PartialEq)]
struct ResponseHead {
    status: u16,
    /// False when the server closes the connection after this response.
    keep_alive: bool,
}

impl EtcdClient {
    /// Connects to a member's client endpoint, given as `http://host:port` or `host:port`.
    pub async fn connect(endpoint: &str) -> anyhow::Result<Self> {
        let host = endpoint.strip_prefix("http://").unwrap_or(endpoint);
        let host = host.trim_end_matches('/').to_string();
        if host.contains("://") {
            bail!("etcd endpoint {endpoint:?}: only http:// is supported");
        }
        let mut client = Self {
            host,
            conn: None,
            request: Vec::with_capacity(8 * 1024),
            body: String::with_capacity(8 * 1024),
            line: Vec::with_capacity(256),
            response: Vec::with_capacity(8 * 1024),
        };
        client.conn = Some(client.open().await?);
        Ok(client)
    }

    async fn open(&self) -> anyhow::Result<BufReader<TcpStream>> {
        let stream = tokio::time::timeout(REQUEST_TIMEOUT, TcpStream::connect(&self.host))
            .await
            .map_err(|_| {
                anyhow!(
                    "connect to etcd {}: no answer within {REQUEST_TIMEOUT:?}",
                    self.host
                )
            })?
            .with_context(|| format!("connect to etcd {}", self.host))?;
        stream.set_nodelay(true)?;
        Ok(BufReader::with_capacity(64 * 1024, stream))
    }

    /// Puts `value` at `key` (`POST /v3/kv/put`); returns once the cluster has committed it.
    pub async fn put(&mut self, key: &str, value: &[u8]) -> anyhow::Result<()> {
        // Base64 needs no JSON escaping, so the body is written directly.
        self.body.clear();
        self.body.push_str("{\"key\":\"");
        BASE64.encode_string(key, &mut self.body);
        self.body.push_str("\",\"value\":\"");
        BASE64.encode_string(value, &mut self.body);
        self.body.push_str("\"}");
        self.post("/v3/kv/put").await
    }

    /// Reads `key` (`POST /v3/kv/range`, linearizable, etcd's default): its value, or
    /// `None` if the key does not exist.
    pub async fn get(&mut self, key: &str) -> anyhow::Result<Option<Vec<u8>>> {
        self.body.clear();
        self.body.push_str("{\"key\":\"");
        BASE64.encode_string(key, &mut self.body);
        self.body.push_str("\"}");
        self.post("/v3/kv/range").await?;
        let reply: serde_json::Value =
            serde_json::from_slice(&self.response).context("etcd range: response is not JSON")?;
        let Some(kv) = reply.get("kvs").and_then(|kvs| kvs.get(0)) else {
            return Ok(None);
        };
        // proto3 JSON leaves out empty fields, so an empty value has no "value".
        let value = kv.get("value").and_then(|v| v.as_str()).unwrap_or("");
        Ok(Some(
            BASE64
                .decode(value)
                .context("etcd range: value is not base64")?,
        ))
    }

    /// Sends `self.body` to `path` and leaves the response body in `self.response`; a
    /// status other than 200 is an error carrying etcd's message.
    async fn post(&mut self, path: &str) -> anyhow::Result<()> {
        let mut conn = match self.conn.take() {
            Some(conn) => conn,
            None => self.open().await?,
        };
        self.request.clear();
        self.request.extend_from_slice(
            format!(
                "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\n\r\n",
                self.host,
                self.body.len()
            )
            .as_bytes(),
        );
        self.request.extend_from_slice(self.body.as_bytes());
        let exchange = async {
            conn.get_mut().write_all(&self.request).await?;
            read_response(&mut conn, &mut self.line, &mut self.response).await
        };
        // On any error `conn` is dropped here, so the next request starts clean.
        let head = tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| anyhow!("etcd {path}: no response within {REQUEST_TIMEOUT:?}"))??;
        if head.keep_alive {
            self.conn = Some(conn);
        }
        if head.status != 200 {
            let message = serde_json::from_slice::<serde_json::Value>(&self.response)
                .ok()
                .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
                .unwrap_or_else(|| String::from_utf8_lossy(&self.response).into_owned());
            bail!("etcd {path}: HTTP {}: {message}", head.status);
        }
        Ok(())
    }
}

/// Reads one HTTP/1.1 response: status line, headers, and the body (by `Content-Length`,
/// chunked, or up to EOF) into `body`.
async fn read_response<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    line: &mut Vec<u8>,
    body: &mut Vec<u8>,
) -> anyhow::Result<ResponseHead> {
    body.clear();
    read_line_bounded(reader, line, MAX_LINE).await?;
    let status_line = String::from_utf8_lossy(line);
    let mut parts = status_line.split_whitespace();
    let version = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/1.") {
        bail!("not an HTTP/1.x response: {:?}", status_line.trim_end());
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("bad status line {:?}", status_line.trim_end()))?;
    let mut keep_alive = version != "HTTP/1.0";
    let mut content_length = None;
    let mut chunked = false;
    let mut headers = 0;
    loop {
        read_line_bounded(reader, line, MAX_LINE).await?;
        if line == b"\r\n" || line == b"\n" {
            break;
        }
        headers += 1;
        if headers > MAX_HEADERS {
            bail!("more than {MAX_HEADERS} response headers");
        }
        let header = String::from_utf8_lossy(line);
        let Some((name, value)) = header.split_once(':') else {
            bail!("bad header line {:?}", header.trim_end());
        };
        let value = value.trim().to_ascii_lowercase();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => {
                content_length = Some(
                    value
                        .parse::<usize>()
                        .with_context(|| format!("bad Content-Length {value:?}"))?,
                )
            }
            "transfer-encoding" => chunked = value.split(',').any(|v| v.trim() == "chunked"),
            "connection" => keep_alive = !value.split(',').any(|v| v.trim() == "close"),
            _ => {}
        }
    }
    if chunked {
        read_chunked(reader, line, body).await?;
    } else if let Some(len) = content_length {
        if len > MAX_BODY {
            bail!("response body of {len} bytes is too large");
        }
        body.resize(len, 0);
        reader.read_exact(body).await?;
    } else {
        // No length given: the body ends when the server closes the connection.
        reader.take(MAX_BODY as u64 + 1).read_to_end(body).await?;
        if body.len() > MAX_BODY {
            bail!("response body is too large");
        }
        keep_alive = false;
    }
    Ok(ResponseHead { status, keep_alive })
}

/// Reads a chunked body (RFC 9112 section 7.1), ignoring chunk extensions and trailers.
async fn read_chunked<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    line: &mut Vec<u8>,
    body: &mut Vec<u8>,
) -> anyhow::Result<()> {
    loop {
        read_line_bounded(reader, line, MAX_LINE).await?;
        let size_line = String::from_utf8_lossy(line);
        let size_text = size_line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16)
            .with_context(|| format!("bad chunk size {size_text:?}"))?;
        if size == 0 {
            // Trailers, if any, end with an empty line.
            loop {
                read_line_bounded(reader, line, MAX_LINE).await?;
                if line == b"\r\n" || line == b"\n" {
                    return Ok(());
                }
            }
        }
        if body.len() + size > MAX_BODY {
            bail!("chunked response body is too large");
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(&mut body[start..]).await?;
        let mut crlf = [0u8; 2];
        reader.read_exact(&mut crlf).await?;
        if &crlf != b"\r\n" {
            bail!("chunk not followed by CRLF");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn put_get_round_trip_and_missing_key() {
        if find_binary("etcd").is_none() {
            eprintln!("skipped: etcd is not installed");
            return;
        }
        let cluster = EtcdCluster::start().await.unwrap();
        let endpoints = cluster.endpoints();
        assert_eq!(endpoints.len(), 3);
        let mut client = EtcdClient::connect(&endpoints[0]).await.unwrap();
        let value: Vec<u8> = (0..4096u32).map(|i| (i % 251) as u8).collect();
        client.put("k", &value).await.unwrap();
        assert_eq!(client.get("k").await.unwrap(), Some(value.clone()));
        assert_eq!(client.get("missing").await.unwrap(), None);
        client.put("empty", b"").await.unwrap();
        assert_eq!(client.get("empty").await.unwrap(), Some(Vec::new()));
        // Linearizable: another member sees the committed write.
        let mut other = EtcdClient::connect(&endpoints[2]).await.unwrap();
        assert_eq!(other.get("k").await.unwrap(), Some(value.clone()));

        // For orientation only (debug build, shared machine): mean 4 KB round trip.
        let rounds = 100;
        let started = Instant::now();
        for _ in 0..rounds {
            client.put("k", &value).await.unwrap();
        }
        let put = started.elapsed() / rounds;
        let started = Instant::now();
        for _ in 0..rounds {
            client.get("k").await.unwrap();
        }
        let get = started.elapsed() / rounds;
        eprintln!("etcd 4 KB: put {put:?}, get {get:?} (mean of {rounds})");

        let pids = cluster.pids();
        let dirs: Vec<PathBuf> = cluster.members.iter().map(|m| m.data_dir.clone()).collect();
        drop(cluster);
        for pid in pids {
            assert!(!Path::new(&format!("/proc/{pid}")).exists());
        }
        for dir in dirs {
            assert!(!dir.exists(), "{} left behind", dir.display());
        }
    }

    async fn parse(raw: &[u8]) -> anyhow::Result<(ResponseHead, Vec<u8>)> {
        let mut reader = BufReader::new(raw);
        let (mut line, mut body) = (Vec::new(), Vec::new());
        let head = read_response(&mut reader, &mut line, &mut body).await?;
        Ok((head, body))
    }

    #[tokio::test]
    async fn reads_content_length_chunked_and_close_delimited_bodies() {
        let (head, body) = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
            .await
            .unwrap();
        assert_eq!(
            head,
            ResponseHead {
                status: 200,
                keep_alive: true
            }
        );
        assert_eq!(body, b"hello");

        let raw = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n\
                    5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: y\r\n\r\n";
        let (head, body) = parse(raw).await.unwrap();
        assert_eq!(
            head,
            ResponseHead {
                status: 200,
                keep_alive: true
            }
        );
        assert_eq!(body, b"hello world");

        let (head, body) =
            parse(b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\n\r\n{}")
                .await
                .unwrap();
        assert_eq!(
            head,
            ResponseHead {
                status: 503,
                keep_alive: false
            }
        );
        assert_eq!(body, b"{}");

        assert!(parse(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort")
            .await
            .is_err());
        assert!(parse(b"SSH-2.0\r\n\r\n").await.is_err());
    }
}
