//! Node processes for tests.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};

use crate::DEADLINE;

/// A running `grid-node` process. Killed (SIGKILL, by process id) when dropped.
#[derive(Debug)]
pub struct NodeProcess {
    child: Child,
    client_addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
    geo_addr: Option<SocketAddr>,
}

impl NodeProcess {
    /// Starts `bin` (the test-node binary) on an ephemeral loopback port with `args`
    /// added, and waits for its ready line.
    pub fn start(bin: &str, args: &[&str]) -> anyhow::Result<Self> {
        Self::start_at(bin, "127.0.0.1:0", args)
    }

    /// Like [`NodeProcess::start`] at a given listen address (to restart a node where it
    /// was).
    pub fn start_at(bin: &str, listen: &str, args: &[&str]) -> anyhow::Result<Self> {
        Self::start_through(&[], bin, listen, args)
    }

    /// Like [`NodeProcess::start_at`], run through a command `prefix` such as
    /// `ip netns exec NS` (to start it on another host). The prefix must exec the node, not
    /// fork it, so the process id is the node's and killing it by id stops the node.
    pub fn start_through(
        prefix: &[String],
        bin: &str,
        listen: &str,
        args: &[&str],
    ) -> anyhow::Result<Self> {
        let mut cmd = match prefix.split_first() {
            Some((program, rest)) => {
                let mut cmd = Command::new(program);
                cmd.args(rest).arg(bin);
                cmd
            }
            None => Command::new(bin),
        };
        cmd.args(["--listen", listen]).args(args).env(
            "GRID_LOG",
            std::env::var("GRID_TEST_LOG").unwrap_or_else(|_| "warn,openraft=off".into()),
        );
        let (child, line) = spawn_ready(cmd, bin)?;
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(name))
                .map(str::to_string)
        };
        let client_addr = field("client=")
            .ok_or_else(|| anyhow!("unexpected ready line {line:?}"))?
            .parse()?;
        let admin_addr = field("admin=").and_then(|a| a.parse().ok());
        let geo_addr = field("geo=").and_then(|a| a.parse().ok());
        Ok(Self {
            child,
            client_addr,
            admin_addr,
            geo_addr,
        })
    }

    /// Where other sites reach it, if geo replication is on.
    pub fn geo_addr(&self) -> Option<SocketAddr> {
        self.geo_addr
    }

    /// Where clients connect.
    pub fn client_addr(&self) -> SocketAddr {
        self.client_addr
    }

    /// The admin endpoint, if started with `--admin`.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// A connection string for this node, with `extra` appended (`;key=value...`).
    pub fn connection_string(&self, extra: &str) -> String {
        format!("bootstrapGateways={}{extra}", self.client_addr)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory of the process, from `/proc`.
    pub fn rss_bytes(&self) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))?;
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| anyhow!("no VmRSS in /proc/{}/status", self.pid()))?;
        Ok(kb * 1024)
    }

    /// Sends a signal by process id (`TERM`, `INT`, `KILL`).
    pub fn signal(&self, name: &str) -> anyhow::Result<()> {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()?;
        if !status.success() {
            bail!("kill -{name} {} failed", self.pid());
        }
        Ok(())
    }

    /// Waits for the process to exit, up to `deadline`.
    pub fn wait_exit(&mut self, deadline: Duration) -> anyhow::Result<ExitStatus> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if start.elapsed() > deadline {
                bail!("node {} still running after {deadline:?}", self.pid());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `cmd` with its stdout piped and waits up to the deadline for its first line
/// (a ready line naming its addresses); the rest of stdout is drained so the process
/// never blocks on it. A process that prints nothing is killed.
pub fn spawn_ready(mut cmd: Command, what: &str) -> anyhow::Result<(Child, String)> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("cannot start {what}"))?;
    let stdout = child.stdout.take().context("no stdout")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    match rx.recv_timeout(DEADLINE) {
        Ok(line) => Ok((child, line)),
        Err(_) => {
            let _ = child.kill();
            let status = child.wait().ok();
            bail!("{what} printed no ready line within {DEADLINE:?} (exit: {status:?})")
        }
    }
}

/// Runs a command to completion with a deadline, returning (status, stdout, stderr).
pub fn run_with_deadline(
    command: &mut Command,
    stdin: Option<&[u8]>,
    deadline: Duration,
) -> anyhow::Result<(ExitStatus, Vec<u8>, String)> {
    use std::io::Write;
    let mut child = command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().context("no stdin")?;
        pipe.write_all(input)?;
    }
    let (tx, rx) = mpsc::channel();
    let pid = child.id();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(deadline) {
        Ok(output) => {
            let output = output?;
            Ok((
                output.status,
                output.stdout,
                String::from_utf8_lossy(&output.stderr).into_owned(),
            ))
        }
        Err(_) => {
            let _ = Command::new("kill")
                .arg("-KILL")
                .arg(pid.to_string())
                .status();
            bail!("command did not finish within {deadline:?}")
        }
    }
}
