//! `gridctl`: the grid from the command line. Lives in the library so test binaries can
//! run it as a real process.

use std::io::{Read, Write};
use std::process::ExitCode;
use std::time::Duration;

use crate::{
    ClientError, GridClient, LockOptions, LockResult, RemoteRead, Timeout, WriteOptions, Written,
};
use clap::{Parser, Subcommand};
use grid_proto::WriteBody;

mod backup;
mod status;

/// Command-line client of the data grid.
///
/// Exit status: 0 on success (also when the reader of stdout goes away early, as with
/// `gridctl status | head -1`); 1 when the object is not found (or, for `lock`, locked by
/// someone else), with a one-line message on stderr; 2 on any error, with a one-line
/// message on stderr.
#[derive(Debug, Parser)]
#[command(name = "gridctl", version)]
struct Cli {
    /// Connection string, e.g. "bootstrapGateways=127.0.0.1:7210;authToken=...".
    #[arg(
        long,
        env = "GRID_CONNECTION",
        default_value = "bootstrapGateways=127.0.0.1:7210",
        hide_env_values = true
    )]
    connect: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show the cluster: nodes, replicas and leaders per node, objects, the map epoch, and
    /// how replication is doing (nodes down, partitions short of replicas or moving).
    /// Every node is asked at once, each within the connection string's timeouts.
    Status {
        /// Also list each node's background jobs: state, rounds, last run and last error.
        #[arg(long)]
        workers: bool,
    },
    /// Store a value (from VALUE, or from stdin when VALUE is omitted or "-").
    Put {
        /// Namespace.
        ns: String,
        /// Key.
        key: String,
        /// The value; "-" or nothing reads stdin, so large or binary values work.
        value: Option<String>,
        /// Expire the object after this long, e.g. 30s or 20m (from the write; with
        /// --sliding, from the last access).
        #[arg(long, value_parser = humantime::parse_duration)]
        ttl: Option<Duration>,
        /// Make --ttl a sliding timeout: every access restarts it.
        #[arg(long, requires = "ttl")]
        sliding: bool,
        /// Tag the object (repeatable, at most 8 tags of at most 64 bytes), e.g.
        /// `--tag user:42`; `find --tag` and `remove --tag` then reach it. Without
        /// --tag, a replaced object keeps the tags it had.
        #[arg(long = "tag", value_name = "TAG")]
        tags: Vec<String>,
    },
    /// Print the keys of the objects carrying a tag, one per line (exit 1 if none).
    /// Every partition answers as of a linearizable point of its own.
    Find {
        /// Namespace.
        ns: String,
        /// The tag.
        #[arg(long)]
        tag: String,
    },
    /// Write the value to stdout.
    Get {
        /// Namespace.
        ns: String,
        /// Key.
        key: String,
        /// If the object is not at this site, pull it from these sites (names as the
        /// nodes' --remote-store), in order; it then becomes primary here.
        #[arg(long, value_delimiter = ',')]
        remote_stores: Vec<String>,
    },
    /// Remove an object, or with --tag every object carrying the tag (locked or not),
    /// printing how many were removed.
    Remove {
        /// Namespace.
        ns: String,
        /// Key (or --tag).
        #[arg(required_unless_present = "tag")]
        key: Option<String>,
        /// The lock id, if the object is locked by you.
        #[arg(long, conflicts_with = "tag")]
        lock_id: Option<u64>,
        /// Remove every object of the namespace carrying this tag instead.
        #[arg(long, conflicts_with = "key")]
        tag: Option<String>,
    },
    /// Lock an object and print the lock id.
    Lock {
        /// Namespace.
        ns: String,
        /// Key.
        key: String,
        /// Wait up to this long if someone else holds the lock, e.g. 5s.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "0s")]
        wait: Duration,
        /// Lease after which the lock frees itself (default: the node's, 90s).
        #[arg(long, value_parser = humantime::parse_duration)]
        lease: Option<Duration>,
    },
    /// Release a lock.
    Unlock {
        /// Namespace.
        ns: String,
        /// Key.
        key: String,
        /// The lock id printed by `lock`.
        lock_id: u64,
    },
    /// Register for a namespace's events and print one line per event,
    /// `<cause> <key> <bytes>` (cause: expired, low-memory or revoked), acknowledging each, until
    /// interrupted. Several of these share the events: each goes to one of them.
    Events {
        /// Namespace.
        ns: String,
    },
    /// Copy every partition of the running cluster into FILE: each partition as one
    /// consistent point, taken from its leader without pausing writes (a partition's
    /// writes wait while its copy is taken, about a millisecond per MB). The file is
    /// versioned and checksummed; it appears under FILE only once complete. Locks and
    /// events owed are not copied.
    Backup {
        /// The file to write.
        file: std::path::PathBuf,
    },
    /// Write every object of a backup FILE into the cluster (normally a new one; keys
    /// already there are overwritten). The whole file is checked first: a damaged or
    /// foreign file restores nothing. Timeouts: sliding ones start again, absolute ones
    /// get the time they had left when backed up.
    Restore {
        /// The backup file.
        file: std::path::PathBuf,
    },
}

/// How a command ended, beyond success.
enum Failure {
    /// An expected negative outcome (exit 1).
    Negative(String),
    /// An error (exit 2).
    Error(String),
    /// Whoever read stdout stopped reading: nothing more to say (exit 0, silently).
    Closed,
}

/// Standard output, where a reader that went away ends the command quietly instead of
/// panicking (`println!` panics on a closed pipe).
struct Out(std::io::Stdout);

impl Out {
    fn new() -> Self {
        Out(std::io::stdout())
    }

    /// Writes one line.
    fn line(&mut self, text: impl std::fmt::Display) -> Result<(), Failure> {
        let mut out = self.0.lock();
        writeln!(out, "{text}").map_err(write_failure)
    }

    /// Writes bytes as they are, flushed.
    fn bytes(&mut self, bytes: &[u8]) -> Result<(), Failure> {
        let mut out = self.0.lock();
        out.write_all(bytes)
            .and_then(|()| out.flush())
            .map_err(write_failure)
    }
}

fn write_failure(e: std::io::Error) -> Failure {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        Failure::Closed
    } else {
        Failure::Error(format!("cannot write to stdout: {e}"))
    }
}

/// One line on stderr; a closed stderr is ignored (there is nobody left to tell).
fn complain(text: impl std::fmt::Display) {
    let _ = writeln!(std::io::stderr(), "{text}");
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::NotFound => Failure::Negative("not found".into()),
            other => Failure::Error(other.to_string()),
        }
    }
}

/// Parses the command line, runs one command, and returns the exit status.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            complain(format_args!("gridctl: cannot start the async runtime: {e}"));
            return ExitCode::from(2);
        }
    };
    let mut out = Out::new();
    let result = runtime.block_on(run(cli, &mut out));
    // Flushed here, so a reader gone by now also ends quietly.
    let result = result.and_then(|()| out.0.lock().flush().map_err(write_failure));
    match result {
        Ok(()) | Err(Failure::Closed) => ExitCode::SUCCESS,
        Err(Failure::Negative(msg)) => {
            complain(msg);
            ExitCode::from(1)
        }
        Err(Failure::Error(msg)) => {
            complain(format_args!("gridctl: {msg}"));
            ExitCode::from(2)
        }
    }
}

fn read_value(value: Option<String>) -> Result<Vec<u8>, Failure> {
    match value.as_deref() {
        Some(v) if v != "-" => Ok(v.as_bytes().to_vec()),
        _ => {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .map_err(|e| Failure::Error(format!("cannot read the value from stdin: {e}")))?;
            Ok(buf)
        }
    }
}

async fn run(cli: Cli, out: &mut Out) -> Result<(), Failure> {
    let client = GridClient::connect(&cli.connect).await?;
    match cli.command {
        Command::Status { workers } => status::print(&client, workers, out).await?,
        Command::Put {
            ns,
            key,
            value,
            ttl,
            sliding,
            tags,
        } => {
            let value = read_value(value)?;
            let timeout = match ttl {
                None => Timeout::None,
                Some(d) if sliding => Timeout::Sliding {
                    ms: d.as_millis() as u64,
                },
                Some(d) => Timeout::Absolute {
                    ms: d.as_millis() as u64,
                },
            };
            let version = if tags.is_empty() {
                client.put(&ns, &key, value, timeout).await?
            } else {
                let options = WriteOptions {
                    tags: Some(tags),
                    timeout: Some(timeout),
                    create: true,
                    ..WriteOptions::default()
                };
                match client
                    .write(&ns, &key, WriteBody::Whole(value), options)
                    .await?
                {
                    Written::Added(version) | Written::Updated(version) => version,
                }
            };
            out.line(format_args!("version {version}"))?;
        }
        Command::Find { ns, tag } => {
            let keys = client.find_by_tag(&ns, &tag).await?;
            if keys.is_empty() {
                return Err(Failure::Negative(format!(
                    "no object in '{ns}' carries the tag '{tag}'"
                )));
            }
            for key in keys {
                out.line(String::from_utf8_lossy(&key))?;
            }
        }
        Command::Get {
            ns,
            key,
            remote_stores,
        } => {
            let object = if remote_stores.is_empty() {
                client.get(&ns, &key).await?.ok_or(ClientError::NotFound)?
            } else {
                match client.get_remote(&ns, &key, &remote_stores).await? {
                    RemoteRead::Found(object) => object,
                    RemoteRead::NotFound { reasons } if reasons.is_empty() => {
                        return Err(ClientError::NotFound.into())
                    }
                    RemoteRead::NotFound { reasons } => {
                        return Err(Failure::Negative(format!(
                            "not found ({})",
                            reasons.join("; ")
                        )))
                    }
                    RemoteRead::Locked {
                        lock_id,
                        lock_age_ms,
                    } => {
                        return Err(ClientError::Locked {
                            lock_id,
                            lock_age_ms,
                        }
                        .into())
                    }
                }
            };
            out.bytes(&object.value)?;
        }
        Command::Remove {
            ns, tag: Some(tag), ..
        } => {
            let removed = client.remove_by_tag(&ns, &tag).await?;
            out.line(removed)?;
        }
        Command::Remove {
            ns, key, lock_id, ..
        } => {
            let key = key.unwrap_or_default();
            if !client.remove(&ns, &key, lock_id).await? {
                return Err(ClientError::NotFound.into());
            }
            out.line("removed")?;
        }
        Command::Lock {
            ns,
            key,
            wait,
            lease,
        } => {
            let options = LockOptions {
                wait,
                lease,
                ..LockOptions::default()
            };
            match client.lock(&ns, &key, options).await? {
                LockResult::Acquired { lock_id, .. } => out.line(lock_id)?,
                LockResult::Locked {
                    lock_id,
                    lock_age_ms,
                } => {
                    return Err(Failure::Negative(format!(
                        "locked by lock id {lock_id} for {lock_age_ms} ms"
                    )))
                }
                LockResult::NotFound => return Err(ClientError::NotFound.into()),
            }
        }
        Command::Unlock { ns, key, lock_id } => {
            client.unlock(&ns, &key, lock_id).await?;
            out.line("unlocked")?;
        }
        Command::Events { ns } => print_events(&client, &ns, out).await?,
        Command::Backup { file } => backup::backup(&client, &file, out).await?,
        Command::Restore { file } => backup::restore(&client, &file, out).await?,
    }
    Ok(())
}

async fn print_events(client: &GridClient, ns: &str, out: &mut Out) -> Result<(), Failure> {
    let mut events = client.subscribe(ns).await?;
    loop {
        let delivery = tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            next = events.next() => next.ok_or_else(|| Failure::Error("the event subscription stopped".into()))?,
        };
        let e = &delivery.event;
        let line = format!(
            "{} {} {}",
            e.cause,
            String::from_utf8_lossy(&e.obj.key),
            e.value.len()
        );
        // Printed (and flushed) before the ack: an event is never acknowledged unseen.
        if out.bytes(format!("{line}\n").as_bytes()).is_err() {
            return Ok(());
        }
        delivery.ack().await?;
    }
}
