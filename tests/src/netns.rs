//! Real hosts for tests: Linux network namespaces joined by a bridge, so nodes and
//! clients talk over real interfaces and addresses, and a cut is a link going down.
//!
//! ```text
//!   bridge namespace (br0)            one namespace per host
//!   ┌──────────────────────┐          ┌──────────────────────────┐
//!   │ br0 ─ v0 ════════════╪══ veth ══╪═ eth0 10.213.0.11/24     │  host 0
//!   │     ─ v1 ════════════╪══ veth ══╪═ eth0 10.213.0.12/24     │  host 1
//!   │     ─ ...            │          └──────────────────────────┘
//!   └──────────────────────┘
//! ```
//!
//! Nothing is created in the namespace the tests run in: the bridge lives in a namespace
//! of its own, every veth is created there with its peer moved straight into its host's
//! namespace, and traffic only flows between the lab's own addresses. Names carry a
//! prefix, the process id and a per-process lab number, so runs never collide and what an
//! earlier crashed run left behind is recognised and removed. [`Lab`] removes its
//! namespaces (and anything still running in them) when dropped, on failure or panic too.
//!
//! - [`Lab`]: builds the namespaces; [`Lab::cut`] and [`Lab::heal`] take a host's link
//!   down and up on both ends.
//! - [`Host`]: one namespace with one address; [`Host::command`] runs a program in it and
//!   [`Host::run`] runs async client code in it, on an OS thread of its own.
//! - [`lab_or_skip`]: a lab, or a clear skip where the machine cannot build one (an error
//!   instead when `CI` is set).

pub mod cluster;

use std::future::Future;
use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::process::run_with_deadline;

/// Prefix of every namespace a lab creates ("grid multi-host").
const PREFIX: &str = "gridmh";
/// The lab's subnet; hosts get `.11`, `.12`, ... It only exists inside the lab's
/// namespaces, so labs running side by side do not see each other.
const SUBNET: [u8; 3] = [10, 213, 0];
/// First host address in the subnet.
const FIRST_HOST: u8 = 11;
/// Most hosts one lab may have (addresses stay within the /24).
const MAX_HOSTS: usize = 32;
/// The bridge inside the bridge namespace.
const BRIDGE: &str = "br0";
/// A host's interface, inside its own namespace.
const HOST_LINK: &str = "eth0";
/// Longest one `ip` command may take on a loaded machine.
const IP_DEADLINE: Duration = Duration::from_secs(30);
/// Longest the processes left in a namespace may take to die when it is removed.
const KILL_DEADLINE: Duration = Duration::from_secs(10);

/// Labs created by this process, numbering their namespaces.
static LABS: AtomicU32 = AtomicU32::new(0);

/// A bridge namespace and `n` host namespaces, each with a veth to the bridge and one
/// address. Dropping it removes every namespace it created, after killing (by process id)
/// whatever still runs inside them.
#[derive(Debug)]
pub struct Lab {
    bridge_ns: String,
    hosts: Vec<Host>,
    /// Namespaces created so far, in order; removed in reverse, so a lab that failed
    /// half-way is removed as far as it got.
    created: Vec<String>,
}

/// One host of a [`Lab`]: a network namespace with one address on the lab's bridge.
#[derive(Debug, Clone)]
pub struct Host {
    ns: String,
    addr: Ipv4Addr,
    /// The bridge-side end of this host's veth.
    port: String,
}

impl Lab {
    /// Builds a lab of `hosts` hosts, first removing what an earlier run of the same
    /// program left behind (namespaces whose process is gone). Needs root and `ip`.
    pub fn new(hosts: usize) -> anyhow::Result<Self> {
        if hosts == 0 || hosts > MAX_HOSTS {
            bail!("a lab has 1 to {MAX_HOSTS} hosts, not {hosts}");
        }
        remove_stale();
        let tag = format!(
            "{PREFIX}{}-{}",
            std::process::id(),
            LABS.fetch_add(1, Ordering::Relaxed)
        );
        let mut lab = Self {
            bridge_ns: format!("{tag}b"),
            hosts: Vec::new(),
            created: Vec::new(),
        };
        let br = lab.bridge_ns.clone();
        lab.add_namespace(&br)?;
        ip(&["-n", &br, "link", "set", "lo", "up"])?;
        ip(&["-n", &br, "link", "add", BRIDGE, "type", "bridge"])?;
        ip(&["-n", &br, "link", "set", BRIDGE, "up"])?;
        for i in 0..hosts {
            let ns = format!("{tag}h{i}");
            let port = format!("v{i}");
            let offset = u8::try_from(i).context("too many hosts")?;
            let addr = Ipv4Addr::new(SUBNET[0], SUBNET[1], SUBNET[2], FIRST_HOST + offset);
            lab.add_namespace(&ns)?;
            // Created inside the bridge namespace with its peer moved straight into the
            // host's: no interface ever appears in the namespace the tests run in.
            ip(&[
                "-n", &br, "link", "add", &port, "type", "veth", "peer", "name", HOST_LINK,
                "netns", &ns,
            ])?;
            ip(&["-n", &br, "link", "set", &port, "master", BRIDGE, "up"])?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                HOST_LINK,
            ])?;
            ip(&["-n", &ns, "link", "set", HOST_LINK, "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            lab.hosts.push(Host { ns, addr, port });
        }
        Ok(lab)
    }

    fn add_namespace(&mut self, ns: &str) -> anyhow::Result<()> {
        ip(&["netns", "add", ns])?;
        self.created.push(ns.to_string());
        Ok(())
    }

    /// Host `i`.
    pub fn host(&self, i: usize) -> &Host {
        &self.hosts[i]
    }

    /// Every host, by index.
    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    /// Takes host `i`'s link down on both ends (the bridge port and the host's
    /// interface): nothing passes in either direction until [`Lab::heal`]. The host still
    /// reaches its own address.
    pub fn cut(&self, i: usize) -> anyhow::Result<()> {
        let host = &self.hosts[i];
        ip(&["-n", &self.bridge_ns, "link", "set", &host.port, "down"])?;
        ip(&["-n", &host.ns, "link", "set", HOST_LINK, "down"])?;
        Ok(())
    }

    /// Brings host `i`'s link back up on both ends (its route comes back with it).
    pub fn heal(&self, i: usize) -> anyhow::Result<()> {
        let host = &self.hosts[i];
        ip(&["-n", &host.ns, "link", "set", HOST_LINK, "up"])?;
        ip(&["-n", &self.bridge_ns, "link", "set", &host.port, "up"])?;
        Ok(())
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in self.created.iter().rev() {
            if let Err(e) = remove_namespace(ns) {
                eprintln!("lab cleanup: {e:#}");
            }
        }
    }
}

impl Host {
    /// The namespace's name.
    pub fn ns(&self) -> &str {
        &self.ns
    }

    /// The host's address.
    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    /// The command prefix that runs a program on this host (`ip netns exec NS`). It
    /// execs the program, so a child's process id is the program's.
    pub fn exec_prefix(&self) -> Vec<String> {
        ["ip", "netns", "exec", &self.ns]
            .into_iter()
            .map(str::to_string)
            .collect()
    }

    /// A command that runs `program` on this host.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns, program]);
        cmd
    }

    /// Runs the future `make` returns on a new OS thread that has moved into this host's
    /// network namespace, on a single-threaded runtime of its own: every socket it opens
    /// belongs to this host. `what` names it in errors.
    pub fn run<T, F, Fut>(&self, what: &str, make: F) -> anyhow::Result<HostTask<T>>
    where
        T: Send + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = anyhow::Result<T>>,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let path = format!("/run/netns/{}", self.ns);
        std::thread::Builder::new()
            .name(format!("{}-{what}", self.ns))
            .spawn(move || {
                let result = (|| {
                    let ns = std::fs::File::open(&path).with_context(|| format!("open {path}"))?;
                    rustix::thread::move_into_link_name_space(
                        ns.as_fd(),
                        Some(rustix::thread::LinkNameSpaceType::Network),
                    )
                    .with_context(|| format!("setns {path}"))?;
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()?;
                    runtime.block_on(make())
                })();
                let _ = tx.send(result);
            })
            .with_context(|| format!("cannot start a thread for {what}"))?;
        Ok(HostTask {
            what: format!("{what} on {}", self.ns),
            rx,
        })
    }
}

/// Client code running on a host's thread (see [`Host::run`]).
#[derive(Debug)]
pub struct HostTask<T> {
    what: String,
    rx: tokio::sync::oneshot::Receiver<anyhow::Result<T>>,
}

impl<T> HostTask<T> {
    /// Waits up to `deadline` for the result. A panic on the thread is an error here (its
    /// message went to stderr).
    pub async fn join(self, deadline: Duration) -> anyhow::Result<T> {
        match tokio::time::timeout(deadline, self.rx).await {
            Err(_) => bail!("{} did not finish within {deadline:?}", self.what),
            Ok(Err(_)) => bail!("{} panicked", self.what),
            Ok(Ok(result)) => result.with_context(|| self.what.clone()),
        }
    }
}

/// A lab of `hosts` hosts, or `Ok(None)` after printing why `test` is skipped where the
/// machine cannot build one (not root, no `ip`, no network namespaces). When the `CI`
/// environment variable is set (and not `false` or `0`) that is an error instead, so a
/// CI machine never skips silently.
pub fn lab_or_skip(test: &str, hosts: usize) -> anyhow::Result<Option<Lab>> {
    let reason = match preconditions().and_then(|()| Lab::new(hosts)) {
        Ok(lab) => return Ok(Some(lab)),
        Err(e) => e,
    };
    let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
    if ci {
        return Err(reason.context(format!(
            "{test}: cannot build network namespaces, and CI is set"
        )));
    }
    eprintln!(
        "SKIPPED {test}: it needs root, iproute2 and Linux network namespaces ({reason:#}); \
         set CI=true to make this a failure"
    );
    Ok(None)
}

/// Root, and a working `ip`.
fn preconditions() -> anyhow::Result<()> {
    let status = std::fs::read_to_string("/proc/self/status").context("read /proc/self/status")?;
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .context("no Uid line in /proc/self/status")?;
    if euid != "0" {
        bail!("not root (effective uid {euid})");
    }
    ip(&["-V"]).context("`ip` (iproute2) is not usable")?;
    Ok(())
}

/// Runs `ip ARGS` with a deadline; its stdout, or an error naming the command and its
/// stderr.
fn ip(args: &[&str]) -> anyhow::Result<String> {
    let (status, out, err) = run_with_deadline(Command::new("ip").args(args), None, IP_DEADLINE)
        .with_context(|| format!("ip {}", args.join(" ")))?;
    if !status.success() {
        bail!("ip {} failed ({status}): {}", args.join(" "), err.trim());
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// Kills (by process id) what still runs in namespace `ns`, then deletes it. Bounded:
/// gives up after [`KILL_DEADLINE`] and reports what is left.
fn remove_namespace(ns: &str) -> anyhow::Result<()> {
    let own = std::process::id();
    let start = Instant::now();
    for _ in 0..200 {
        let pids: Vec<u32> = ip(&["netns", "pids", ns])?
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            // Never this test process itself (only its threads ever enter a lab).
            .filter(|p| *p != own)
            .collect();
        if pids.is_empty() {
            break;
        }
        if start.elapsed() > KILL_DEADLINE {
            eprintln!("lab cleanup: {pids:?} still running in {ns}; deleting it anyway");
            break;
        }
        for pid in pids {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    ip(&["netns", "del", ns]).map(drop)
}

/// Removes the namespaces of earlier runs of this program that ended without cleaning
/// up: those with this lab's prefix whose process id is no longer this program. Failures
/// are reported and otherwise ignored (they do not stop the new lab).
fn remove_stale() {
    let own = std::process::id();
    let Ok(list) = ip(&["netns", "list"]) else {
        return;
    };
    let own_comm = std::fs::read_to_string("/proc/self/comm").unwrap_or_default();
    for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        // A live run of this same program keeps its namespaces (the process name is
        // compared, so a reused process id does not keep stale ones forever).
        let alive =
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|comm| comm == own_comm);
        if pid == own || alive {
            continue;
        }
        eprintln!("lab: removing {name}, left by an earlier run (process {pid} is gone)");
        if let Err(e) = remove_namespace(name) {
            eprintln!("lab cleanup: {e:#}");
        }
    }
}
