//! Redis as a benchmark peer: a `redis-server` child process on a loopback ephemeral port
//! with persistence off, and a one-connection async client for GET and SET.
//!
//! The client is a hand-written RESP2 client over a tokio `TcpStream` rather than the
//! `redis` crate: two commands with bulk-string replies need ~80 lines, add nothing to
//! build on a shared 2-core machine, and keep the request path as thin as the grid's own
//! client (one `write_all` per request, replies read from one buffered reader).
//!
//! This file also holds the child-process helpers that [`crate::etcd_peer`] reuses
//! (binary lookup, free ports, startup output capture, bounded line reads).

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use tokio::io::{
    AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader as AsyncBufReader,
};
use tokio::net::TcpStream;

/// How long [`RedisServer::start`] waits for the server to answer PING.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long one request (write and reply) may take before the client gives up.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts at starting on a fresh port: another process may take the port between our
/// probe and redis' bind.
const START_ATTEMPTS: usize = 3;
/// Longest reply header line accepted (`+OK`, `-ERR ...`, `$4096`).
const MAX_LINE: u64 = 64 * 1024;
/// Largest bulk string accepted; Redis' own limit is 512 MB.
const MAX_BULK: usize = 512 * 1024 * 1024;

/// A `redis-server` child process on `127.0.0.1`, with RDB and AOF persistence off.
/// Killed (SIGKILL, by pid) and reaped when dropped.
#[derive(Debug)]
pub struct RedisServer {
    child: Child,
    port: u16,
    output: ChildOutput,
}

impl RedisServer {
    /// Starts `redis-server` on a free loopback port and returns once it answers PING
    /// (bounded by 20 s). Fails if the binary is not on `PATH`.
    ///
    /// Its process title carries `redis-bench-<our pid>-<port>`, so a wrapper script
    /// (`bench/run.sh`) can find and kill it if this process dies without running `Drop`.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(&[]).await
    }

    /// Like [`RedisServer::start`], with `extra` arguments for `redis-server` (e.g.
    /// `--replicaof 127.0.0.1 <port>`).
    pub async fn start_with(extra: &[String]) -> anyhow::Result<Self> {
        let binary = find_binary("redis-server")
            .context("redis-server not found on PATH (apt-get install redis-server)")?;
        let mut last_err = anyhow!("redis-server was not started");
        for _ in 0..START_ATTEMPTS {
            let port = free_loopback_ports(1)?[0];
            let mut cmd = Command::new(&binary);
            cmd.args(["--port", &port.to_string()])
                .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .args(["--daemonize", "no", "--loglevel", "warning"])
                // A replica's full sync writes an RDB file: not into the caller's directory.
                .arg("--dir")
                .arg(std::env::temp_dir())
                .arg("--proc-title-template")
                .arg(format!(
                    "{{title}} {{listen-addr}} redis-bench-{}-{port}",
                    std::process::id()
                ))
                .args(extra);
            let (child, output) = spawn_captured(cmd, "redis")?;
            let mut server = Self {
                child,
                port,
                output,
            };
            match server.wait_ready().await {
                Ok(()) => {
                    server.output.pass_through();
                    return Ok(server);
                }
                // Dropping `server` kills the child before the next attempt.
                Err(e) => last_err = e,
            }
        }
        Err(last_err)
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "redis-server on port {} exited during startup ({status}):\n{}",
                    self.port,
                    self.output.tail()
                );
            }
            if let Ok(mut client) = RedisClient::connect(&self.addr()).await {
                if client.ping().await.is_ok() {
                    return Ok(());
                }
            }
            if started.elapsed() > START_TIMEOUT {
                bail!(
                    "redis-server on port {} did not answer PING within {START_TIMEOUT:?}:\n{}",
                    self.port,
                    self.output.tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `127.0.0.1:<port>`, for [`RedisClient::connect`].
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The server's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's process id, e.g. to read its CPU time from `/proc`.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The installed `redis-server`'s version, e.g. `7.0.15`.
    pub fn version() -> anyhow::Result<String> {
        let out = Command::new("redis-server").arg("--version").output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        text.split_whitespace()
            .find_map(|w| w.strip_prefix("v="))
            .map(str::to_string)
            .ok_or_else(|| anyhow!("unexpected redis-server --version output {text:?}"))
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A replicated Redis: a primary and `REPLICAS` replicas (`--replicaof`) on loopback, for
/// writes acknowledged by every replica (`SET` then `WAIT 2 1000`).
#[derive(Debug)]
pub struct RedisReplicated {
    /// Takes the writes.
    pub primary: RedisServer,
    /// Follow the primary.
    pub replicas: Vec<RedisServer>,
}

/// Replicas of [`RedisReplicated`], as the grid keeps R = 3 copies.
pub const REPLICAS: u32 = 2;

impl RedisReplicated {
    /// Starts the primary and its replicas and returns once every replica's link is up
    /// (bounded by 20 s).
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(|_| Vec::new()).await
    }

    /// Like [`RedisReplicated::start`], server `i` (0: the primary) with `extra(i)` as
    /// further arguments (persistence settings, say).
    pub async fn start_with(extra: impl Fn(usize) -> Vec<String>) -> anyhow::Result<Self> {
        let primary = RedisServer::start_with(&extra(0)).await?;
        let mut replicas = Vec::new();
        for i in 1..=REPLICAS as usize {
            let mut args = vec![
                "--replicaof".to_string(),
                "127.0.0.1".to_string(),
                primary.port().to_string(),
            ];
            args.extend(extra(i));
            replicas.push(RedisServer::start_with(&args).await?);
        }
        let started = Instant::now();
        let mut client = RedisClient::connect(&primary.addr()).await?;
        loop {
            let mut up =
                client.info_field("replication", "connected_slaves").await? == REPLICAS.to_string();
            for replica in &replicas {
                let mut c = RedisClient::connect(&replica.addr()).await?;
                up &= c.info_field("replication", "master_link_status").await? == "up";
            }
            if up {
                return Ok(Self { primary, replicas });
            }
            if started.elapsed() > START_TIMEOUT {
                bail!("redis replicas did not link to the primary within {START_TIMEOUT:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// One RESP2 connection to a Redis server. Requests are sent one at a time (no
/// pipelining), like the closed-loop clients of the other backends.
#[derive(Debug)]
pub struct RedisClient {
    reader: AsyncBufReader<TcpStream>,
    /// The encoded request, reused between calls.
    request: Vec<u8>,
    /// The reply header line, reused between calls.
    line: Vec<u8>,
}

/// A reply that is not an error (none of our commands gets an array).
enum Reply {
    Simple(Vec<u8>),
    Bulk(Option<Vec<u8>>),
    Integer(i64),
}

impl RedisClient {
    /// Connects to `addr` (`host:port`), with TCP_NODELAY set.
    pub async fn connect(addr: &str) -> anyhow::Result<Self> {
        let stream = tokio::time::timeout(REQUEST_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| anyhow!("connect to redis {addr}: no answer within {REQUEST_TIMEOUT:?}"))?
            .with_context(|| format!("connect to redis {addr}"))?;
        stream.set_nodelay(true)?;
        Ok(Self {
            reader: AsyncBufReader::with_capacity(64 * 1024, stream),
            request: Vec::with_capacity(8 * 1024),
            line: Vec::with_capacity(64),
        })
    }

    /// `GET key`: the value, or `None` if the key does not exist.
    pub async fn get(&mut self, key: &str) -> anyhow::Result<Option<Vec<u8>>> {
        match self.call(&[b"GET", key.as_bytes()]).await? {
            Reply::Bulk(value) => Ok(value),
            _ => bail!("redis GET: unexpected reply type"),
        }
    }

    /// `SET key value` (no expiry).
    pub async fn set(&mut self, key: &str, value: &[u8]) -> anyhow::Result<()> {
        match self.call(&[b"SET", key.as_bytes(), value]).await? {
            Reply::Simple(s) if s == b"OK" => Ok(()),
            _ => bail!("redis SET: unexpected reply"),
        }
    }

    /// `WAIT replicas timeout_ms`: how many replicas acknowledged every write of this
    /// connection so far, once `replicas` have or the timeout passed.
    pub async fn wait(&mut self, replicas: u32, timeout_ms: u64) -> anyhow::Result<u32> {
        let (n, t) = (replicas.to_string(), timeout_ms.to_string());
        match self.call(&[b"WAIT", n.as_bytes(), t.as_bytes()]).await? {
            Reply::Integer(acked) => Ok(u32::try_from(acked)?),
            _ => bail!("redis WAIT: unexpected reply type"),
        }
    }

    /// One field of `INFO <section>` (e.g. `used_memory_rss` of `memory`).
    pub async fn info_field(&mut self, section: &str, field: &str) -> anyhow::Result<String> {
        let Reply::Bulk(Some(text)) = self.call(&[b"INFO", section.as_bytes()]).await? else {
            bail!("redis INFO: unexpected reply type");
        };
        let text = String::from_utf8(text)?;
        text.lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .map(|v| v.trim().to_string())
            .with_context(|| format!("redis INFO {section}: no {field}"))
    }

    /// `PING`: succeeds once the server serves commands (not while it is loading).
    pub async fn ping(&mut self) -> anyhow::Result<()> {
        match self.call(&[b"PING"]).await? {
            Reply::Simple(s) if s == b"PONG" => Ok(()),
            _ => bail!("redis PING: unexpected reply"),
        }
    }

    /// Sends one command as an array of bulk strings and reads its reply; a `-ERR` reply
    /// becomes an error.
    async fn call(&mut self, args: &[&[u8]]) -> anyhow::Result<Reply> {
        self.request.clear();
        push_header(&mut self.request, b'*', args.len());
        for arg in args {
            push_header(&mut self.request, b'$', arg.len());
            self.request.extend_from_slice(arg);
            self.request.extend_from_slice(b"\r\n");
        }
        let exchange = async {
            self.reader.get_mut().write_all(&self.request).await?;
            read_reply(&mut self.reader, &mut self.line).await
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| anyhow!("redis: no reply within {REQUEST_TIMEOUT:?}"))?
    }
}

/// Appends `<kind><n>\r\n`.
fn push_header(buf: &mut Vec<u8>, kind: u8, n: usize) {
    buf.push(kind);
    buf.extend_from_slice(n.to_string().as_bytes());
    buf.extend_from_slice(b"\r\n");
}

async fn read_reply<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    line: &mut Vec<u8>,
) -> anyhow::Result<Reply> {
    read_line_bounded(reader, line, MAX_LINE).await?;
    let text = line
        .strip_suffix(b"\r\n")
        .context("redis: reply line without CRLF")?;
    let (&kind, rest) = text.split_first().context("redis: empty reply line")?;
    let number = || -> anyhow::Result<i64> {
        std::str::from_utf8(rest)?
            .parse()
            .with_context(|| format!("redis: bad number {:?}", String::from_utf8_lossy(rest)))
    };
    match kind {
        b'+' => Ok(Reply::Simple(rest.to_vec())),
        b'-' => bail!("redis: {}", String::from_utf8_lossy(rest)),
        b':' => Ok(Reply::Integer(number()?)),
        b'$' => {
            let len = number()?;
            if len < 0 {
                return Ok(Reply::Bulk(None));
            }
            let len = usize::try_from(len)?;
            if len > MAX_BULK {
                bail!("redis: bulk string of {len} bytes is too large");
            }
            let mut value = vec![0; len + 2];
            reader.read_exact(&mut value).await?;
            if !value.ends_with(b"\r\n") {
                bail!("redis: bulk string without CRLF");
            }
            value.truncate(len);
            Ok(Reply::Bulk(Some(value)))
        }
        other => bail!("redis: unsupported reply type {:?}", other as char),
    }
}

// ---- Helpers shared with `etcd_peer` ----

/// The full path of `name` if an executable file of that name is on `PATH`.
pub(crate) fn find_binary(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// `n` distinct ports that were free on 127.0.0.1 a moment ago: all are bound at once and
/// then released, so they differ from each other. Another process may still take one
/// before the child binds it; callers treat a child that exits at startup as that case.
pub(crate) fn free_loopback_ports(n: usize) -> anyhow::Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()
        .context("bind an ephemeral port on 127.0.0.1")?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr()?.port()))
        .collect()
}

/// Reads one `\n`-terminated line (kept in `buf`, terminator included) of at most `max`
/// bytes; EOF or a longer line is an error, so a misbehaving peer cannot grow `buf`
/// without bound.
pub(crate) async fn read_line_bounded<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    buf: &mut Vec<u8>,
    max: u64,
) -> anyhow::Result<()> {
    buf.clear();
    let n = reader.take(max).read_until(b'\n', buf).await?;
    if n == 0 {
        bail!("connection closed by the server");
    }
    if !buf.ends_with(b"\n") {
        bail!("line longer than {max} bytes, or truncated");
    }
    Ok(())
}

/// Lines kept from a child's output while it starts, shown if it fails to start.
const OUTPUT_TAIL_LINES: usize = 20;

/// The stdout and stderr of a child process, drained by two threads. Until
/// [`ChildOutput::pass_through`] the last lines are kept (for a startup error); after it,
/// lines go to our stderr with a label, so a peer's runtime warnings stay visible without
/// its startup banner.
#[derive(Debug, Clone)]
pub(crate) struct ChildOutput {
    label: String,
    tail: Arc<Mutex<VecDeque<String>>>,
    passing: Arc<AtomicBool>,
}

impl ChildOutput {
    /// The kept lines, one per line.
    pub(crate) fn tail(&self) -> String {
        match self.tail.lock() {
            Ok(tail) => tail.iter().cloned().collect::<Vec<_>>().join("\n"),
            Err(_) => String::new(),
        }
    }

    /// From now on, prints the child's lines to stderr instead of keeping them.
    pub(crate) fn pass_through(&self) {
        self.passing.store(true, Ordering::Relaxed);
    }

    fn drain(&self, stream: impl Read + Send + 'static) {
        let this = self.clone();
        // The threads end when the child's end of the pipe closes, i.e. when it exits.
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                if this.passing.load(Ordering::Relaxed) {
                    eprintln!("{}: {line}", this.label);
                } else if let Ok(mut tail) = this.tail.lock() {
                    if tail.len() == OUTPUT_TAIL_LINES {
                        tail.pop_front();
                    }
                    tail.push_back(line);
                }
            }
        });
    }
}

/// Spawns `cmd` with stdin closed and its stdout and stderr captured by a [`ChildOutput`].
pub(crate) fn spawn_captured(
    mut cmd: Command,
    label: &str,
) -> anyhow::Result<(Child, ChildOutput)> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("spawn {label}"))?;
    let output = ChildOutput {
        label: label.to_string(),
        tail: Arc::default(),
        passing: Arc::default(),
    };
    if let Some(stdout) = child.stdout.take() {
        output.drain(stdout);
    }
    if let Some(stderr) = child.stderr.take() {
        output.drain(stderr);
    }
    Ok((child, output))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn set_get_round_trip_and_missing_key() {
        if find_binary("redis-server").is_none() {
            eprintln!("skipped: redis-server is not installed");
            return;
        }
        let server = RedisServer::start().await.unwrap();
        let mut client = RedisClient::connect(&server.addr()).await.unwrap();
        let value: Vec<u8> = (0..4096u32).map(|i| (i % 251) as u8).collect();
        client.set("k", &value).await.unwrap();
        assert_eq!(client.get("k").await.unwrap(), Some(value.clone()));
        assert_eq!(client.get("missing").await.unwrap(), None);
        // Binary-safe: CRLF inside a value is data, not a delimiter.
        client.set("crlf", b"a\r\nb").await.unwrap();
        assert_eq!(client.get("crlf").await.unwrap(), Some(b"a\r\nb".to_vec()));
        assert!(client.get("").await.is_ok());

        // For orientation only (debug build, shared machine): mean 4 KB round trip.
        let rounds = 200;
        let started = Instant::now();
        for _ in 0..rounds {
            client.set("k", &value).await.unwrap();
        }
        let set = started.elapsed() / rounds;
        let started = Instant::now();
        for _ in 0..rounds {
            client.get("k").await.unwrap();
        }
        let get = started.elapsed() / rounds;
        eprintln!("redis 4 KB: set {set:?}, get {get:?} (mean of {rounds})");

        let pid = server.pid();
        drop(server);
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    }

    #[tokio::test]
    async fn error_reply_is_an_error() {
        let (mut ours, theirs) = tokio::io::duplex(1024);
        let mut reader = AsyncBufReader::new(theirs);
        ours.write_all(b"-WRONGTYPE nope\r\n$-1\r\n").await.unwrap();
        let mut line = Vec::new();
        let err = read_reply(&mut reader, &mut line).await.err().unwrap();
        assert!(err.to_string().contains("WRONGTYPE"));
        assert!(matches!(
            read_reply(&mut reader, &mut line).await.unwrap(),
            Reply::Bulk(None)
        ));
    }
}
