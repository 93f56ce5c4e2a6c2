//! ScaleOut-style connection strings:
//! `bootstrapGateways=10.0.0.1:7210,10.0.0.2;maxRequestRetries=2;authToken=...`.
//!
//! `key=value` pairs separated by `;`. Keys are case-insensitive; unknown, repeated or
//! malformed keys are errors naming the key. Durations take a unit (`500ms`, `5s`, `2m`) or
//! are bare milliseconds.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use grid_proto::peer_auth::PeerKey;
use thiserror::Error;

use crate::tls::{ClientTls, TlsSettings};

/// Port used when a gateway names none.
pub const DEFAULT_PORT: u16 = 7210;

/// One bootstrap gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gateway {
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl fmt::Display for Gateway {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// A parsed, validated connection string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// `bootstrapGateways` (required): nodes tried in order to reach the grid.
    pub gateways: Vec<Gateway>,
    /// `maxRequestRetries` (default 2): retries of a request that did not run (node
    /// unreachable, not the leader, unavailable), and of reads whose connection broke.
    pub max_request_retries: u32,
    /// `eventConnectionCount` (default 4, 1..=64): connections used for expiration events.
    pub event_connection_count: u32,
    /// `maxPoolSize` (default 4, 1..=256): connections per node; requests spread over them.
    pub max_pool_size: u32,
    /// `useSecure` (default false): TLS 1.3 to the nodes, verified against `tlsCaFile`.
    pub use_secure: bool,
    /// `tlsCaFile`, `tlsServerName`, `tlsCertFile`, `tlsKeyFile`: see [`TlsSettings`].
    pub tls: TlsSettings,
    /// A node's own credentials, for its connections to its cluster (set in code, never
    /// from a connection string: applications do not hold them).
    pub node: Option<NodeCredentials>,
    /// `authToken` (default none): the secret configured on the nodes.
    pub auth_token: Option<String>,
    /// `connectTimeout` (default 5 s): limit on opening a connection.
    pub connect_timeout: Duration,
    /// `requestTimeout` (default 10 s): limit on one request, beyond any lock wait.
    pub request_timeout: Duration,
    /// How the client names itself to nodes (set in code, not in the connection
    /// string); `None`: `grid-client/<version>`.
    pub client_name: Option<String>,
    /// `clientCacheType` (`LRU`, `LRU-MaxMemory` or `None`; default `LRU`) and
    /// `clientCacheCapacity` (objects for `LRU`, default 100; megabytes for
    /// `LRU-MaxMemory`, default 100): the strictly coherent near cache.
    pub near_cache: NearCacheConfig,
}

/// What a node proves to its own cluster: the cluster secret, and TLS to the nodes' ports
/// when they use it.
#[derive(Debug, Clone)]
pub struct NodeCredentials {
    /// The cluster secret.
    pub key: PeerKey,
    /// TLS to the nodes' ports, trusting the nodes' CA and presenting the node's own
    /// certificate.
    pub tls: Option<ClientTls>,
}

impl PartialEq for NodeCredentials {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key && self.tls.is_some() == other.tls.is_some()
    }
}

impl Eq for NodeCredentials {}

/// The near cache's bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NearCacheConfig {
    /// No near cache: every read carries the bytes.
    Off,
    /// Least recently used objects go first past this many objects.
    Lru {
        /// Objects kept.
        max_objects: u64,
    },
    /// Least recently used objects go first past this many bytes (key + value).
    LruMaxMemory {
        /// Bytes kept.
        max_bytes: u64,
    },
}

/// Objects a near cache keeps by default (`clientCacheType=LRU`).
pub const DEFAULT_CACHE_OBJECTS: u64 = 100;
/// Megabytes a near cache keeps by default (`clientCacheType=LRU-MaxMemory`).
pub const DEFAULT_CACHE_MB: u64 = 100;

impl Default for NearCacheConfig {
    fn default() -> Self {
        NearCacheConfig::Lru {
            max_objects: DEFAULT_CACHE_OBJECTS,
        }
    }
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            gateways: Vec::new(),
            max_request_retries: 2,
            event_connection_count: 4,
            max_pool_size: 4,
            use_secure: false,
            tls: TlsSettings::default(),
            node: None,
            auth_token: None,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            near_cache: NearCacheConfig::default(),
            client_name: None,
        }
    }
}

/// What is wrong with a connection string. Every variant names the key.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ConnStringError {
    /// A segment has no `=`.
    #[error("connection string segment '{segment}' is not key=value")]
    NotKeyValue {
        /// The segment.
        segment: String,
    },
    /// The key is not one this client knows.
    #[error("unknown connection string key '{key}' (known: bootstrapGateways, maxRequestRetries, eventConnectionCount, maxPoolSize, useSecure, tlsCaFile, tlsServerName, tlsCertFile, tlsKeyFile, authToken, connectTimeout, requestTimeout, clientCacheType, clientCacheCapacity)")]
    UnknownKey {
        /// The key as written.
        key: String,
    },
    /// The key appears twice.
    #[error("connection string key '{key}' is given more than once")]
    Repeated {
        /// The key as written.
        key: String,
    },
    /// The value does not parse or is out of range.
    #[error("connection string key '{key}': {reason}")]
    BadValue {
        /// The key.
        key: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// `bootstrapGateways` is missing.
    #[error("connection string needs bootstrapGateways=host[:port][,host[:port]...]")]
    MissingGateways,
}

fn bad(key: &'static str, reason: impl Into<String>) -> ConnStringError {
    ConnStringError::BadValue {
        key,
        reason: reason.into(),
    }
}

fn parse_gateway(text: &str) -> Result<Gateway, ConnStringError> {
    const KEY: &str = "bootstrapGateways";
    let text = text.trim();
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| bad(KEY, format!("'{text}' has no closing ']'")))?;
        match after.strip_prefix(':') {
            Some(port) => (host, Some(port)),
            None if after.is_empty() => (host, None),
            None => return Err(bad(KEY, format!("'{text}' is not [host]:port"))),
        }
    } else {
        match text.rsplit_once(':') {
            Some((host, _)) if host.contains(':') => {
                return Err(bad(
                    KEY,
                    format!("IPv6 address '{text}' needs brackets: [addr]:port"),
                ))
            }
            Some((host, port)) => (host, Some(port)),
            None => (text, None),
        }
    };
    if host.is_empty() || host.chars().any(char::is_whitespace) {
        return Err(bad(KEY, format!("'{text}' has no valid host")));
    }
    let port = match port {
        None => DEFAULT_PORT,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| bad(KEY, format!("port '{p}' is not 1-65535")))?,
    };
    Ok(Gateway {
        host: host.to_string(),
        port,
    })
}

fn parse_u32(
    key: &'static str,
    value: &str,
    range: std::ops::RangeInclusive<u32>,
) -> Result<u32, ConnStringError> {
    let n: u32 = value
        .parse()
        .map_err(|_| bad(key, format!("'{value}' is not a whole number")))?;
    if !range.contains(&n) {
        return Err(bad(
            key,
            format!("{n} is outside {}..={}", range.start(), range.end()),
        ));
    }
    Ok(n)
}

fn parse_bool(key: &'static str, value: &str) -> Result<bool, ConnStringError> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "yes" | "1" => Ok(true),
        "false" | "no" | "0" => Ok(false),
        _ => Err(bad(key, format!("'{value}' is not true or false"))),
    }
}

fn parse_path(key: &'static str, value: &str) -> Result<PathBuf, ConnStringError> {
    if value.is_empty() {
        return Err(bad(key, "is empty"));
    }
    Ok(PathBuf::from(value))
}

/// Parses a duration: bare milliseconds or a humane form (`250ms`, `5s`, `20m`).
pub fn parse_duration(key: &'static str, value: &str) -> Result<Duration, ConnStringError> {
    let d = match value.parse::<u64>() {
        Ok(ms) => Duration::from_millis(ms),
        Err(_) => humantime::parse_duration(value)
            .map_err(|e| bad(key, format!("'{value}' is not a duration: {e}")))?,
    };
    if d.is_zero() {
        return Err(bad(key, "must be greater than zero"));
    }
    Ok(d)
}

impl FromStr for ClientConfig {
    type Err = ConnStringError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut cfg = ClientConfig::default();
        let mut seen: Vec<&'static str> = Vec::new();
        let (mut cache_type, mut cache_capacity) = ("LRU", None);
        for segment in s.split(';').map(str::trim).filter(|s| !s.is_empty()) {
            let (raw_key, value) =
                segment
                    .split_once('=')
                    .ok_or_else(|| ConnStringError::NotKeyValue {
                        segment: segment.to_string(),
                    })?;
            let (raw_key, value) = (raw_key.trim(), value.trim());
            let key: &'static str = match raw_key.to_ascii_lowercase().as_str() {
                "bootstrapgateways" => "bootstrapGateways",
                "maxrequestretries" => "maxRequestRetries",
                "eventconnectioncount" => "eventConnectionCount",
                "maxpoolsize" => "maxPoolSize",
                "usesecure" => "useSecure",
                "tlscafile" => "tlsCaFile",
                "tlsservername" => "tlsServerName",
                "tlscertfile" => "tlsCertFile",
                "tlskeyfile" => "tlsKeyFile",
                "authtoken" => "authToken",
                "connecttimeout" => "connectTimeout",
                "requesttimeout" => "requestTimeout",
                "clientcachetype" => "clientCacheType",
                "clientcachecapacity" => "clientCacheCapacity",
                _ => {
                    return Err(ConnStringError::UnknownKey {
                        key: raw_key.to_string(),
                    })
                }
            };
            if seen.contains(&key) {
                return Err(ConnStringError::Repeated {
                    key: raw_key.to_string(),
                });
            }
            seen.push(key);
            match key {
                "bootstrapGateways" => {
                    cfg.gateways = value
                        .split(',')
                        .filter(|g| !g.trim().is_empty())
                        .map(parse_gateway)
                        .collect::<Result<_, _>>()?;
                    if cfg.gateways.is_empty() {
                        return Err(bad(key, "lists no gateway"));
                    }
                }
                "maxRequestRetries" => cfg.max_request_retries = parse_u32(key, value, 0..=100)?,
                "eventConnectionCount" => {
                    cfg.event_connection_count = parse_u32(key, value, 1..=64)?
                }
                "maxPoolSize" => cfg.max_pool_size = parse_u32(key, value, 1..=256)?,
                "useSecure" => cfg.use_secure = parse_bool(key, value)?,
                "tlsCaFile" => cfg.tls.ca_file = Some(parse_path(key, value)?),
                "tlsCertFile" => cfg.tls.cert_file = Some(parse_path(key, value)?),
                "tlsKeyFile" => cfg.tls.key_file = Some(parse_path(key, value)?),
                "tlsServerName" => {
                    if value.is_empty() {
                        return Err(bad(key, "is empty"));
                    }
                    cfg.tls.server_name = Some(value.to_string());
                }
                "authToken" => {
                    if value.is_empty() {
                        return Err(bad(key, "is empty"));
                    }
                    cfg.auth_token = Some(value.to_string());
                }
                "connectTimeout" => cfg.connect_timeout = parse_duration(key, value)?,
                "requestTimeout" => cfg.request_timeout = parse_duration(key, value)?,
                "clientCacheType" => {
                    cache_type = match value.to_ascii_lowercase().as_str() {
                        "lru" => "LRU",
                        "lru-maxmemory" => "LRU-MaxMemory",
                        "none" => "None",
                        _ => {
                            return Err(bad(
                                key,
                                format!("'{value}' is not LRU, LRU-MaxMemory or None"),
                            ))
                        }
                    }
                }
                "clientCacheCapacity" => {
                    cache_capacity = Some(u64::from(parse_u32(key, value, 0..=1_000_000_000)?))
                }
                _ => unreachable!("every known key is matched above"),
            }
        }
        cfg.near_cache = match (cache_type, cache_capacity) {
            ("None", _) | (_, Some(0)) => NearCacheConfig::Off,
            ("LRU-MaxMemory", mb) => NearCacheConfig::LruMaxMemory {
                max_bytes: mb.unwrap_or(DEFAULT_CACHE_MB).saturating_mul(1024 * 1024),
            },
            (_, objects) => NearCacheConfig::Lru {
                max_objects: objects.unwrap_or(DEFAULT_CACHE_OBJECTS),
            },
        };
        if cfg.gateways.is_empty() {
            return Err(ConnStringError::MissingGateways);
        }
        let tls_keys = ["tlsCaFile", "tlsServerName", "tlsCertFile", "tlsKeyFile"];
        if let Some(key) = tls_keys.into_iter().find(|k| seen.contains(k)) {
            if !cfg.use_secure {
                return Err(bad(key, "needs useSecure=true"));
            }
        }
        if cfg.use_secure && cfg.tls.ca_file.is_none() {
            return Err(bad(
                "useSecure",
                "needs tlsCaFile=FILE (PEM certificates trusted for the nodes)",
            ));
        }
        Ok(cfg)
    }
}

#[cfg(test)]
#[path = "connstr_tests.rs"]
mod tests;
