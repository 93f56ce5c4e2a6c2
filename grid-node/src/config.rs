//! Node settings: one typed, validated struct, built by the CLI or by tests.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use grid_proto::peer_auth::PeerKey;

use grid_proto::limits::{max_frame_for, DEFAULT_MAX_VALUE_BYTES, MAX_KEY_BYTES};
use thiserror::Error;

use crate::limits::ConnLimits;
use crate::partition::PartitionConfig;
use crate::store::StoreConfig;

/// Default client port, as in ScaleOut's connection strings.
pub const DEFAULT_PORT: u16 = 7210;

/// Everything a node needs to start.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Address for client connections. Default `127.0.0.1:7210`.
    pub listen: SocketAddr,
    /// Address for the admin HTTP endpoint (`/metrics`, `/health`). Default: none.
    pub admin: Option<SocketAddr>,
    /// Shared secret every client must present first. Without one the node only listens
    /// on loopback addresses.
    pub auth_token: Option<String>,
    /// The secret nodes of this cluster prove to each other (never sent, never held by
    /// clients). Required when the node listens, advertises or joins beyond loopback.
    /// Default: none (loopback development only; see [`DEV_CLUSTER_SECRET`]).
    pub cluster_secret: Option<String>,
    /// Bearer token for every admin HTTP route. Required for an admin address beyond
    /// loopback. Default: none.
    pub admin_token: Option<String>,
    /// TLS on the client port (`--tls-cert`, `--tls-key`, ...). Default: plaintext.
    pub tls: Option<NodeTls>,
    /// Bounds of every client connection.
    pub limits: ConnLimits,
    /// Largest value accepted, in bytes. Default 16 MiB.
    pub max_value_bytes: usize,
    /// Partitions the key space is split into. Default 64.
    pub partitions: u32,
    /// Lock lease when a request names none. Default 90 s.
    pub default_lock_lease: Duration,
    /// Most requests that may queue for one object's lock. Default 1024.
    pub max_waiters_per_object: usize,
    /// How often expiry, lease ends and lock-wait deadlines are checked. Default 10 ms.
    pub tick_interval: Duration,
    /// How long shutdown waits for connections to finish their replies. Default 5 s.
    pub shutdown_grace: Duration,
    /// Members to join through; empty bootstraps a new cluster. Default: empty.
    pub join: Vec<String>,
    /// Address other nodes and clients use for this node. Default: the bound client
    /// address.
    pub advertise: Option<String>,
    /// Replicas per partition of a new cluster (fewer while it has fewer nodes). Default 3.
    pub replicas: u32,
    /// How long a node may be unreachable before its partitions are re-replicated
    /// elsewhere. Default 10 s.
    pub down_after: Duration,
    /// Raft heartbeat interval. Default 100 ms.
    pub raft_heartbeat: Duration,
    /// Raft election timeout, lower bound (the upper is twice this). Default 1 s.
    pub raft_election_timeout: Duration,
    /// Answer reads from the leader's state while its leader lease holds (see
    /// `cluster/group/reads.rs`), else after a heartbeat round. Default true.
    pub lease_reads: bool,
    /// Log entries between snapshots of a group; a lagging or new replica beyond the
    /// kept log catches up from a snapshot. Default 5000.
    pub raft_snapshot_logs: u64,
    /// Serve `POST /faults/block` on the admin port, to cut this node off from peers in
    /// fault tests. Never in production. Default off.
    pub fault_injection: bool,
    /// How long a registered client has to acknowledge an event before it goes to
    /// another client of the namespace. Default 30 s.
    pub event_ack_timeout: Duration,
    /// Value bytes this node may hold (over every partition replica it hosts); past it
    /// the least recently used objects are evicted, or writes refused. Default: no limit.
    pub max_memory: Option<u64>,
    /// Past `max_memory`, evict (true) or refuse writes with `LowMemory` (false).
    /// Default true.
    pub evict_on_low_memory: bool,
    /// Geo replication (`--site`, `--geo-listen`, `--remote-store`, ...). Default: off.
    pub geo: Option<crate::geo::GeoConfig>,
    /// Directory where every hosted group's Raft log, vote and snapshot are kept, so a
    /// restarted node comes back as the same member with its data. Default: none (in
    /// memory only; a restarted node rejoins empty under a new id).
    pub data_dir: Option<PathBuf>,
    /// When log appends are synced to disk, with `data_dir`. Default `always`.
    pub fsync: crate::disk::FsyncPolicy,
    /// With `data_dir`, a group writes a snapshot once its log holds this many value
    /// bytes (and half its state's). Default 16 MiB.
    pub raft_snapshot_bytes: u64,
    /// With `data_dir`, writes that add data are refused while the disk has less free
    /// space than this. Default 64 MiB.
    pub disk_reserve: u64,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], DEFAULT_PORT)),
            admin: None,
            auth_token: None,
            cluster_secret: None,
            admin_token: None,
            tls: None,
            limits: ConnLimits::default(),
            max_value_bytes: DEFAULT_MAX_VALUE_BYTES,
            partitions: 64,
            default_lock_lease: Duration::from_secs(90),
            max_waiters_per_object: 1024,
            tick_interval: Duration::from_millis(10),
            shutdown_grace: Duration::from_secs(5),
            join: Vec::new(),
            advertise: None,
            replicas: 3,
            down_after: Duration::from_secs(10),
            raft_heartbeat: Duration::from_millis(100),
            raft_election_timeout: Duration::from_millis(500),
            fault_injection: false,
            lease_reads: true,
            raft_snapshot_logs: 64,
            event_ack_timeout: Duration::from_secs(30),
            max_memory: None,
            evict_on_low_memory: true,
            geo: None,
            data_dir: None,
            fsync: crate::disk::FsyncPolicy::Always,
            raft_snapshot_bytes: 16 * 1024 * 1024,
            disk_reserve: 64 * 1024 * 1024,
        }
    }
}

/// The cluster secret of nodes started without one. They listen on loopback only, where
/// any local process could be a peer anyway (as any could be a client without a token).
pub const DEV_CLUSTER_SECRET: &str = "grid-loopback-development-cluster";

/// Shortest accepted `--cluster-secret`, so it is not guessed.
pub const MIN_CLUSTER_SECRET_BYTES: usize = 16;

/// TLS on the client port, from PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeTls {
    /// `--tls-cert`: this node's certificate chain.
    pub cert: PathBuf,
    /// `--tls-key`: its private key.
    pub key: PathBuf,
    /// `--tls-client-ca`: when set, every client (and peer) must present a certificate
    /// signed by one of these.
    pub client_ca: Option<PathBuf>,
    /// `--tls-ca`: certificates trusted for other nodes' ports, for this node's own peer
    /// connections. Default: `cert` itself when it is a single certificate (nodes sharing
    /// one); required when `cert` holds a chain.
    pub peer_ca: Option<PathBuf>,
}

/// A setting that cannot work, named by its command-line flag.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ConfigError {
    /// Listening beyond loopback without a token would expose the data to anyone.
    #[error("--{flag} {addr} is not a loopback address; set --auth-token (or GRID_AUTH_TOKEN) to listen beyond loopback")]
    NeedsAuthToken {
        /// The flag that named the address.
        flag: &'static str,
        /// The address.
        addr: SocketAddr,
    },
    /// An empty token would be a password anyone guesses.
    #[error("--auth-token must not be empty")]
    EmptyAuthToken,
    /// Peers beyond loopback must prove a secret that clients do not hold.
    #[error("--{flag} {addr} is not a loopback address; set --cluster-secret (or GRID_CLUSTER_SECRET) so only this cluster's nodes can act as peers")]
    NeedsClusterSecret {
        /// The flag that named the address.
        flag: &'static str,
        /// The address.
        addr: String,
    },
    /// A short cluster secret could be guessed.
    #[error("--cluster-secret must be at least {MIN_CLUSTER_SECRET_BYTES} bytes")]
    ShortClusterSecret,
    /// The cluster secret must differ from what clients hold.
    #[error("--cluster-secret must differ from --auth-token: clients hold the token, only nodes may hold the secret")]
    SecretIsToken,
    /// An admin port beyond loopback needs its own credential.
    #[error("--admin {addr} is not a loopback address; set --admin-token (or GRID_ADMIN_TOKEN)")]
    NeedsAdminToken {
        /// The address.
        addr: SocketAddr,
    },
    /// An empty admin token.
    #[error("--admin-token must not be empty")]
    EmptyAdminToken,
    /// Each plane needs its own credential.
    #[error("--admin-token must differ from --auth-token and --cluster-secret: each plane has its own credential")]
    SharedAdminToken,
    /// The value limit must leave room for a value and fit the frame length field.
    #[error("--max-value-bytes {value} must be between 1 and {max}")]
    MaxValueBytes {
        /// The value given.
        value: usize,
        /// The largest allowed.
        max: usize,
    },
    /// A cluster needs at least one partition.
    #[error("--partitions {0} must be between 1 and 65536")]
    Partitions(u32),
    /// Waiters per object must be allowed.
    #[error("max waiters per object must be at least 1")]
    MaxWaiters,
    /// Lease, tick and counts that must be positive.
    #[error("{0} must be greater than zero")]
    ZeroDuration(&'static str),
    /// Replication factor out of range.
    #[error("--replicas {0} must be between 1 and 7")]
    Replicas(u32),
    /// An election must outlast several heartbeats.
    #[error("--raft-election-timeout must be at least 3 x --raft-heartbeat")]
    ElectionTimeout,
}

/// Largest `--max-value-bytes`: a frame's length must fit in 32 bits.
pub const MAX_MAX_VALUE_BYTES: usize = (u32::MAX as usize) / 2;

impl NodeConfig {
    /// Checks every setting; the error names the flag to fix.
    pub fn validate(&self) -> Result<(), ConfigError> {
        match &self.auth_token {
            Some(t) if t.is_empty() => return Err(ConfigError::EmptyAuthToken),
            Some(_) => {}
            None if !self.listen.ip().is_loopback() => {
                return Err(ConfigError::NeedsAuthToken {
                    flag: "listen",
                    addr: self.listen,
                })
            }
            None => {}
        }
        self.validate_cluster_secret()?;
        match (&self.admin_token, self.admin) {
            (Some(t), _) if t.is_empty() => return Err(ConfigError::EmptyAdminToken),
            (Some(t), _)
                if self.auth_token.as_ref() == Some(t)
                    || self.cluster_secret.as_ref() == Some(t) =>
            {
                return Err(ConfigError::SharedAdminToken)
            }
            (None, Some(addr)) if !addr.ip().is_loopback() => {
                return Err(ConfigError::NeedsAdminToken { addr })
            }
            _ => {}
        }
        let limits = &self.limits;
        for (flag, zero) in [
            ("--hello-timeout", limits.hello_timeout.is_zero()),
            ("--idle-timeout", limits.idle_timeout.is_zero()),
            ("--write-timeout", limits.write_timeout.is_zero()),
            ("--max-connections", limits.max_connections == 0),
            ("--max-unauthenticated", limits.max_unauthenticated == 0),
            ("--max-in-flight", limits.max_in_flight == 0),
            ("--reply-queue-bytes", limits.reply_queue_bytes == 0),
        ] {
            if zero {
                return Err(ConfigError::ZeroDuration(flag));
            }
        }
        if self.max_value_bytes == 0 || self.max_value_bytes > MAX_MAX_VALUE_BYTES {
            return Err(ConfigError::MaxValueBytes {
                value: self.max_value_bytes,
                max: MAX_MAX_VALUE_BYTES,
            });
        }
        if self.partitions == 0 || self.partitions > 65_536 {
            return Err(ConfigError::Partitions(self.partitions));
        }
        if self.max_waiters_per_object == 0 {
            return Err(ConfigError::MaxWaiters);
        }
        if self.default_lock_lease.is_zero() {
            return Err(ConfigError::ZeroDuration("lock lease"));
        }
        if self.tick_interval.is_zero() {
            return Err(ConfigError::ZeroDuration("tick interval"));
        }
        if !(1..=7).contains(&self.replicas) {
            return Err(ConfigError::Replicas(self.replicas));
        }
        if self.raft_heartbeat.is_zero() {
            return Err(ConfigError::ZeroDuration("--raft-heartbeat"));
        }
        if self.raft_snapshot_logs == 0 {
            return Err(ConfigError::ZeroDuration("--raft-snapshot-logs"));
        }
        if self.event_ack_timeout.is_zero() {
            return Err(ConfigError::ZeroDuration("--event-ack-timeout"));
        }
        if self.max_memory == Some(0) {
            return Err(ConfigError::ZeroDuration("--max-memory"));
        }
        if self.raft_election_timeout < self.raft_heartbeat * 3 {
            return Err(ConfigError::ElectionTimeout);
        }
        Ok(())
    }

    fn validate_cluster_secret(&self) -> Result<(), ConfigError> {
        match &self.cluster_secret {
            Some(s) if s.len() < MIN_CLUSTER_SECRET_BYTES => Err(ConfigError::ShortClusterSecret),
            Some(s) if self.auth_token.as_deref() == Some(s.as_str()) => {
                Err(ConfigError::SecretIsToken)
            }
            Some(_) => Ok(()),
            None => {
                let beyond = |a: &str| !is_loopback_addr(a);
                if !self.listen.ip().is_loopback() {
                    return Err(ConfigError::NeedsClusterSecret {
                        flag: "listen",
                        addr: self.listen.to_string(),
                    });
                }
                let named = self.advertise.iter().map(|a| ("advertise", a));
                let joins = self.join.iter().map(|a| ("join", a));
                match named.chain(joins).find(|(_, a)| beyond(a)) {
                    Some((flag, addr)) => Err(ConfigError::NeedsClusterSecret {
                        flag,
                        addr: addr.clone(),
                    }),
                    None => Ok(()),
                }
            }
        }
    }

    /// The key peers prove: the configured secret, or the loopback development one.
    pub fn peer_key(&self) -> PeerKey {
        PeerKey::new(
            self.cluster_secret
                .as_deref()
                .unwrap_or(DEV_CLUSTER_SECRET)
                .as_bytes(),
        )
    }

    /// The frame limit that fits the largest value, its key and envelope.
    pub fn max_frame(&self) -> usize {
        max_frame_for(self.max_value_bytes.max(MAX_KEY_BYTES))
    }

    /// Settings handed to each partition.
    pub fn partition_config(&self) -> PartitionConfig {
        PartitionConfig {
            store: StoreConfig {
                default_lease_ms: self.default_lock_lease.as_millis() as u64,
            },
            max_waiters_per_object: self.max_waiters_per_object,
        }
    }
}

/// True for `host:port` text whose host is a loopback IP or `localhost`.
fn is_loopback_addr(addr: &str) -> bool {
    if let Ok(sa) = addr.parse::<SocketAddr>() {
        return sa.ip().is_loopback();
    }
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    host.eq_ignore_ascii_case("localhost")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert_eq!(NodeConfig::default().validate(), Ok(()));
    }

    #[test]
    fn public_address_needs_a_token() {
        let cfg = NodeConfig {
            listen: "0.0.0.0:7210".parse().unwrap(),
            ..NodeConfig::default()
        };
        let err = cfg.validate().unwrap_err();
        assert!(err.to_string().contains("--auth-token"), "{err}");
        let with_token = NodeConfig {
            auth_token: Some("s3cret".into()),
            cluster_secret: Some("a long cluster secret".into()),
            ..cfg
        };
        assert_eq!(with_token.validate(), Ok(()));
    }

    #[test]
    fn public_admin_address_needs_a_token() {
        let cfg = NodeConfig {
            admin: Some("0.0.0.0:9100".parse().unwrap()),
            ..NodeConfig::default()
        };
        assert!(matches!(
            cfg.validate(),
            Err(ConfigError::NeedsAdminToken { .. })
        ));
        // The client token is not an admin credential.
        let client_token = NodeConfig {
            auth_token: Some("s3cret".into()),
            ..cfg.clone()
        };
        assert!(matches!(
            client_token.validate(),
            Err(ConfigError::NeedsAdminToken { .. })
        ));
        let admin_token = NodeConfig {
            admin_token: Some("0p3rator".into()),
            ..cfg
        };
        assert_eq!(admin_token.validate(), Ok(()));
    }

    #[test]
    fn peers_beyond_loopback_need_a_cluster_secret() {
        let public = NodeConfig {
            listen: "0.0.0.0:7210".parse().unwrap(),
            auth_token: Some("s3cret".into()),
            ..NodeConfig::default()
        };
        let err = public.validate().unwrap_err();
        assert!(err.to_string().contains("--cluster-secret"), "{err}");
        let joins = NodeConfig {
            join: vec!["10.1.2.3:7210".into()],
            ..NodeConfig::default()
        };
        assert!(matches!(
            joins.validate(),
            Err(ConfigError::NeedsClusterSecret { flag: "join", .. })
        ));
        let advertised = NodeConfig {
            advertise: Some("node1.example:7210".into()),
            ..NodeConfig::default()
        };
        assert!(matches!(
            advertised.validate(),
            Err(ConfigError::NeedsClusterSecret {
                flag: "advertise",
                ..
            })
        ));
        let short = NodeConfig {
            cluster_secret: Some("short".into()),
            ..public.clone()
        };
        assert_eq!(short.validate(), Err(ConfigError::ShortClusterSecret));
        let same = NodeConfig {
            cluster_secret: Some("s3cret".repeat(4)),
            auth_token: Some("s3cret".repeat(4)),
            ..public.clone()
        };
        assert_eq!(same.validate(), Err(ConfigError::SecretIsToken));
        let shared_admin = NodeConfig {
            cluster_secret: Some("a long cluster secret".into()),
            admin_token: Some("s3cret".into()),
            ..public.clone()
        };
        assert_eq!(shared_admin.validate(), Err(ConfigError::SharedAdminToken));
        let ok = NodeConfig {
            cluster_secret: Some("a long cluster secret".into()),
            ..public
        };
        assert_eq!(ok.validate(), Ok(()));
        let local = NodeConfig {
            join: vec!["localhost:7210".into(), "127.0.0.1:7211".into()],
            ..NodeConfig::default()
        };
        assert_eq!(local.validate(), Ok(()));
    }

    #[test]
    fn bad_numbers_name_their_flag() {
        let zero = NodeConfig {
            max_value_bytes: 0,
            ..NodeConfig::default()
        };
        assert!(zero
            .validate()
            .unwrap_err()
            .to_string()
            .contains("--max-value-bytes"));
        let parts = NodeConfig {
            partitions: 0,
            ..NodeConfig::default()
        };
        assert!(parts
            .validate()
            .unwrap_err()
            .to_string()
            .contains("--partitions"));
        let empty = NodeConfig {
            auth_token: Some(String::new()),
            ..NodeConfig::default()
        };
        assert_eq!(empty.validate(), Err(ConfigError::EmptyAuthToken));
    }
}
