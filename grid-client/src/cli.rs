//! `gridctl`: the grid from the command line. Lives in the library so test binaries can
//! run it as a real process.

use std::io::{Read, Write};
use std::process::ExitCode;
use std::time::Duration;

use crate::{ClientError, GridClient, LockOptions, LockResult, Timeout};
use clap::{Parser, Subcommand};

/// Command-line client of the data grid.
///
/// Exit status: 0 on success; 1 when the object is not found (or, for `lock`, locked by
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
    /// Show the node's version, object count, locks and connections.
    Status,
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
    },
    /// Write the value to stdout.
    Get {
        /// Namespace.
        ns: String,
        /// Key.
        key: String,
    },
    /// Remove an object.
    Remove {
        /// Namespace.
        ns: String,
        /// Key.
        key: String,
        /// The lock id, if the object is locked by you.
        #[arg(long)]
        lock_id: Option<u64>,
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
}

/// How a command ended, beyond success.
enum Failure {
    /// An expected negative outcome (exit 1).
    Negative(String),
    /// An error (exit 2).
    Error(String),
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
            eprintln!("gridctl: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Negative(msg)) => {
            eprintln!("{msg}");
            ExitCode::from(1)
        }
        Err(Failure::Error(msg)) => {
            eprintln!("gridctl: {msg}");
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

async fn run(cli: Cli) -> Result<(), Failure> {
    let client = GridClient::connect(&cli.connect).await?;
    match cli.command {
        Command::Status => {
            let s = client.status().await?;
            println!("node        {}", s.listen);
            println!("version     {}", s.server_version);
            println!(
                "uptime      {}",
                humantime::format_duration(Duration::from_secs(s.uptime_ms / 1000))
            );
            println!("partitions  {}", s.partitions);
            println!("objects     {}", s.objects);
            println!("value bytes {}", s.value_bytes);
            println!("locked      {}", s.locked);
            println!("lock queue  {}", s.lock_waiters);
            println!("connections {}", s.connections);
            println!("requests    {}", s.requests);
            println!("expired     {}", s.expired);
        }
        Command::Put {
            ns,
            key,
            value,
            ttl,
            sliding,
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
            let version = client.put(&ns, &key, value, timeout).await?;
            println!("version {version}");
        }
        Command::Get { ns, key } => {
            let object = client.get(&ns, &key).await?.ok_or(ClientError::NotFound)?;
            let mut out = std::io::stdout().lock();
            out.write_all(&object.value)
                .and_then(|()| out.flush())
                .map_err(|e| Failure::Error(format!("cannot write to stdout: {e}")))?;
        }
        Command::Remove { ns, key, lock_id } => {
            if !client.remove(&ns, &key, lock_id).await? {
                return Err(ClientError::NotFound.into());
            }
            println!("removed");
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
                LockResult::Acquired { lock_id, .. } => println!("{lock_id}"),
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
            println!("unlocked");
        }
    }
    Ok(())
}
