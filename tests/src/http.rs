//! Web servers of the session demo as real processes, and a minimal HTTP/1.1 client over
//! loopback (one request per connection), enough to carry a session cookie.

use std::net::SocketAddr;
use std::process::{Child, Command};

use anyhow::{anyhow, Context};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::process::spawn_ready;
use crate::DEADLINE;

/// A demo web server process, killed when dropped.
#[derive(Debug)]
pub struct WebProcess {
    child: Child,
    addr: SocketAddr,
}

impl WebProcess {
    /// Starts `bin` (the test-web binary) on an ephemeral port against the grid at
    /// `connection`, with `settings` as ATTRIBUTE=VALUE pairs.
    pub fn start(bin: &str, connection: &str, settings: &[&str]) -> anyhow::Result<Self> {
        Self::start_with(bin, &["--connection", connection], settings)
    }

    /// Starts `bin` with these arguments (a settings file, say) besides `--listen` and
    /// `settings`.
    pub fn start_with(bin: &str, args: &[&str], settings: &[&str]) -> anyhow::Result<Self> {
        let mut cmd = Command::new(bin);
        cmd.args(["--listen", "127.0.0.1:0"]).args(args);
        for s in settings {
            cmd.args(["--setting", s]);
        }
        let (child, line) = spawn_ready(cmd, bin)?;
        let addr = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("http://"))
            .ok_or_else(|| anyhow!("unexpected first line {line:?}"))?
            .parse()?;
        Ok(Self { child, addr })
    }

    /// Where it serves.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `GET path`, with the session cookie if given.
    pub async fn get(&self, path: &str, cookie: Option<&str>) -> anyhow::Result<HttpResponse> {
        request(self.addr, "GET", path, cookie).await
    }

    /// Kills it with SIGKILL, by process id.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for WebProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The grid the web tests run on: three `node_bin` nodes with 8 partitions, and a
/// connection string with timeouts generous enough for a loaded machine.
pub async fn web_grid(node_bin: &str) -> anyhow::Result<(crate::cluster::TestCluster, String)> {
    let cluster = crate::cluster::TestCluster::start(node_bin, 3, &["--partitions", "8"]).await?;
    let cs = cluster.connection_string(";requestTimeout=10s;connectTimeout=1s");
    Ok((cluster, cs))
}

/// The session id in a `name=id` cookie.
pub fn session_id(cookie: &str) -> &str {
    cookie.split_once('=').map_or(cookie, |(_, id)| id)
}

/// An HTTP response.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// The session cookie the server set (`name=value`), if any.
    pub set_cookie: Option<String>,
    /// The body, as text.
    pub body: String,
}

/// Sends `method path` to `addr` with an optional `Cookie` header; waits up to the
/// deadline for the whole response.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    cookie: Option<&str>,
) -> anyhow::Result<HttpResponse> {
    let headers: Vec<(&str, &str)> = cookie.map(|c| ("Cookie", c)).into_iter().collect();
    request_with(addr, method, path, &headers).await
}

/// Sends `method path` to `addr` with these headers; waits up to the deadline for the
/// whole response.
pub async fn request_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> anyhow::Result<HttpResponse> {
    tokio::time::timeout(DEADLINE, async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        let extra: String = headers
            .iter()
            .map(|(name, value)| format!("{name}: {value}\r\n"))
            .collect();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}Content-Length: 0\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        parse(&String::from_utf8_lossy(&raw))
    })
    .await
    .with_context(|| format!("{method} {path}: no response within {DEADLINE:?}"))?
}

fn parse(raw: &str) -> anyhow::Result<HttpResponse> {
    let (head, body) = raw.split_once("\r\n\r\n").context("no header end")?;
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .context("no status line")?;
    let set_cookie = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(name, _)| name.eq_ignore_ascii_case("set-cookie"))
        .and_then(|(_, v)| v.trim().split(';').next().map(str::to_string));
    Ok(HttpResponse {
        status,
        set_cookie,
        body: body.to_string(),
    })
}
