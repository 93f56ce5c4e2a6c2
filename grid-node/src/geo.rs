//! This node's part in geo replication: it serves other sites' migration steps, pulls
//! objects a local read misses from the configured remote stores, resolves hand-overs
//! left half-done by a crash, and probes the remote stores for `gridctl status`.
//!
//! ```text
//! Pull(read, [east]) ─▶ read here ─ hit ─▶ reply
//!                          └ miss/proxy ─▶ east: Export ─▶ here: Import ─▶ east: Commit ─▶ read here
//! resolver (1 s): sources migrating > 5 s ─▶ destination: Resolve ─▶ Commit or Abort here
//! prober (2 s):   Ping every remote store ─▶ status
//! ```
//!
//! Migration steps on this site go through an internal client of the site's own cluster,
//! so they reach each partition's leader wherever it is.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use geo_replication::{
    GeoError, GeoHandler, GeoLink, GeoRequest, GeoResponse, GeoTls, StepAnswer, TlsFiles,
};
use grid_client::{ClientConfig, GridClient, NodeCredentials};
use grid_proto::sync::lock;
use grid_proto::{GeoOp, ObjKey, Op, RemoteStoreStatus, Reply, Unavailability};
use tokio::sync::OnceCell;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::cluster::runtime::ClusterNode;
use crate::workers::{Round, Workers};

/// How long a source waits on a hand-over before asking the destination about it.
const RESOLVE_AFTER_MS: u64 = 5_000;
/// How often stuck hand-overs are looked for.
const RESOLVE_EVERY: Duration = Duration::from_secs(1);
/// How often remote stores are probed.
const PROBE_EVERY: Duration = Duration::from_secs(2);
/// How often a read that waits for a lock held at a remote site asks it again (the
/// remote site's queue serves its own clients; this site is not in it).
const REMOTE_LOCK_RETRY: Duration = Duration::from_millis(100);

/// Geo settings of a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeoConfig {
    /// This site's name (`--site`).
    pub site: String,
    /// Where other sites reach this node (`--geo-listen`).
    pub listen: SocketAddr,
    /// Remote stores by name: their nodes' geo addresses (`--remote-store`).
    pub remotes: BTreeMap<String, Vec<String>>,
    /// Shared secret of the sites (`--geo-token`).
    pub token: Option<String>,
    /// Certificates (`--geo-cert`, `--geo-key`, `--geo-ca`).
    pub tls: TlsFiles,
    /// Longest one remote store may take to answer (`--geo-timeout`).
    pub timeout: Duration,
}

/// A node's geo service.
#[derive(Debug)]
pub struct GeoService {
    link: Arc<GeoLink>,
    config: GeoConfig,
    /// This site's cluster, for migration steps.
    local: OnceCell<GridClient>,
    local_config: ClientConfig,
    clock: Arc<dyn Clock>,
    reach: Mutex<BTreeMap<String, (bool, String)>>,
}

/// How one remote store answered a pull.
enum Pulled {
    /// The object is primary here now.
    Migrated,
    /// The caller's answer, as is (the object is locked there).
    Answer(Reply),
    /// Not there: why.
    Missing(String),
}

impl GeoService {
    /// Binds the geo endpoint. `cluster_addr` and `peer` (the cluster secret, and TLS
    /// to the nodes' ports) reach this site's own cluster for migration steps.
    pub fn bind(
        config: GeoConfig,
        cluster_addr: &str,
        peer: NodeCredentials,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, GeoError> {
        let tls = GeoTls::new(&config.tls)?;
        if tls.self_signed {
            tracing::info!(
                "geo: self-signed certificate made for development; sites on other machines need --geo-cert/--geo-key and --geo-ca"
            );
        }
        let link = GeoLink::bind(
            config.listen,
            tls,
            config.token.clone(),
            config.site.clone(),
        )?;
        let mut local_config: ClientConfig = format!("bootstrapGateways={cluster_addr}")
            .parse()
            .map_err(|e| GeoError::Address(format!("{cluster_addr}: {e}")))?;
        local_config.node = Some(peer);
        local_config.client_name = Some("grid-node/geo".into());
        local_config.near_cache = grid_client::NearCacheConfig::Off;
        local_config.max_request_retries = 6;
        Ok(Self {
            link: Arc::new(link),
            config,
            local: OnceCell::new(),
            local_config,
            clock,
            reach: Mutex::new(BTreeMap::new()),
        })
    }

    /// The bound geo address.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.link.local_addr()
    }

    /// This site's name.
    pub fn site(&self) -> &str {
        &self.config.site
    }

    /// The remote stores and what the last probe saw.
    pub fn remote_status(&self) -> Vec<RemoteStoreStatus> {
        let reach = lock(&self.reach);
        self.config
            .remotes
            .iter()
            .map(|(name, addrs)| {
                let (reachable, detail) = reach
                    .get(name)
                    .cloned()
                    .unwrap_or((false, "not probed yet".into()));
                RemoteStoreStatus {
                    name: name.clone(),
                    addrs: addrs.clone(),
                    reachable,
                    detail,
                }
            })
            .collect()
    }

    async fn local(&self) -> Result<&GridClient, String> {
        self.local
            .get_or_try_init(|| GridClient::with_config(self.local_config.clone()))
            .await
            .map_err(|e| format!("this site's cluster: {e}"))
    }

    /// Runs a migration step on this site's partition leader.
    async fn step_here(&self, op: GeoOp) -> Reply {
        match self.local().await {
            Ok(client) => client.geo(op).await.unwrap_or_else(|e| Reply::Unavailable {
                code: Unavailability::SiteUnreachable,
                reason: e.to_string(),
            }),
            Err(reason) => Reply::Unavailable {
                code: Unavailability::SiteUnreachable,
                reason,
            },
        }
    }

    /// Sends a step to a remote store, trying its nodes in order within the timeout.
    async fn step_there(&self, store: &str, op: GeoOp) -> Result<StepAnswer, String> {
        let addrs = self
            .config
            .remotes
            .get(store)
            .ok_or_else(|| "not a configured remote store".to_string())?;
        let started = tokio::time::Instant::now();
        let mut last = String::from("no address");
        for addr in addrs {
            let left = self.config.timeout.saturating_sub(started.elapsed());
            if left.is_zero() {
                break;
            }
            match self
                .link
                .request(addr, GeoRequest::Step(op.clone()), left)
                .await
            {
                Ok(GeoResponse::Step(StepAnswer::Unavailable { reason })) => last = reason,
                Ok(GeoResponse::Step(answer)) => return Ok(answer),
                Ok(other) => last = format!("unexpected answer {other:?}"),
                Err(e) => last = e.to_string(),
            }
        }
        Err(format!(
            "unreachable within {:?} ({last})",
            self.config.timeout
        ))
    }

    /// A read that pulls a missing object from `stores`, in order.
    pub async fn pull(&self, cluster: &ClusterNode, op: Op, stores: &[String]) -> Reply {
        let here = cluster.execute(op.clone()).await;
        if !matches!(here, Reply::NotFound | Reply::Moved { .. }) {
            return here;
        }
        let obj = op.obj().clone();
        let mut reasons = Vec::new();
        // A lock at the remote site is waited out as the read would wait here: the
        // remote site is asked again until the read's wait ends.
        let wait = match &op {
            Op::ReadAndLock { wait_ms, .. } => Duration::from_millis(*wait_ms),
            _ => Duration::ZERO,
        };
        let until = tokio::time::Instant::now() + wait;
        for store in stores {
            if *store == self.config.site {
                continue;
            }
            loop {
                match self.pull_from(store, &obj).await {
                    Pulled::Migrated => return cluster.execute(op).await,
                    Pulled::Answer(Reply::Locked { .. }) if tokio::time::Instant::now() < until => {
                        tokio::time::sleep(REMOTE_LOCK_RETRY).await;
                    }
                    Pulled::Answer(reply) => return reply,
                    Pulled::Missing(why) => {
                        reasons.push(format!("{store}: {why}"));
                        break;
                    }
                }
            }
        }
        if let Reply::Moved { site } = here {
            reasons.insert(0, format!("{}: proxy of site {site}", self.config.site));
        }
        Reply::NotFoundRemote { reasons }
    }

    async fn pull_from(&self, store: &str, obj: &ObjKey) -> Pulled {
        // Random, so two sites never pick the same transfer id by accident.
        let transfer = grid_proto::secret::random_id();
        let export = GeoOp::Export {
            obj: obj.clone(),
            transfer,
            to_site: self.config.site.clone(),
        };
        let import = match self.step_there(store, export).await {
            Ok(StepAnswer::Exported {
                value,
                version,
                timeout,
                uninitialized,
                tags,
            }) => GeoOp::Import {
                obj: obj.clone(),
                value,
                version,
                timeout,
                uninitialized,
                transfer,
                tags,
            },
            Ok(StepAnswer::Locked {
                lock_id,
                lock_age_ms,
            }) => {
                return Pulled::Answer(Reply::Locked {
                    lock_id,
                    lock_age_ms,
                })
            }
            Ok(StepAnswer::NotFound) => return Pulled::Missing("not found".into()),
            Ok(StepAnswer::Moved { site }) => {
                return Pulled::Missing(format!("moved to site {site}"))
            }
            Ok(other) => return Pulled::Missing(format!("{other:?}")),
            Err(why) => return Pulled::Missing(why),
        };
        let imported = match self.step_here(import).await {
            Reply::Added { .. } => true,
            // Refused or of unknown outcome: ask this site's own log, which also fences
            // a late import out, so source and destination agree.
            other => {
                tracing::info!(reply = ?other, "geo import not confirmed; resolving");
                let resolve = GeoOp::Resolve {
                    obj: obj.clone(),
                    transfer,
                };
                match self.step_here(resolve).await {
                    Reply::Transfer { committed } => committed,
                    // Unknown still: the source's resolver asks again later.
                    unknown => {
                        return Pulled::Missing(format!("import here unconfirmed: {unknown:?}"))
                    }
                }
            }
        };
        let step = if imported {
            GeoOp::Commit {
                obj: obj.clone(),
                transfer,
            }
        } else {
            GeoOp::Abort {
                obj: obj.clone(),
                transfer,
            }
        };
        // If this does not arrive, the source resolves the hand-over itself.
        if let Err(e) = self.step_there(store, step).await {
            tracing::info!(%store, error = %e, "geo hand-over step not delivered; the source will resolve it");
        }
        if imported {
            Pulled::Migrated
        } else {
            Pulled::Missing("the hand-over was aborted".into())
        }
    }

    /// Resolves hand-overs this site's led partitions have been migrating for too long.
    /// Its error is the last hand-over it could not resolve.
    async fn resolve_stuck(&self, cluster: &ClusterNode) -> Round {
        let mut round = Ok(());
        let before = self.clock.now().saturating_sub(RESOLVE_AFTER_MS);
        for (obj, to, transfer) in cluster.stuck_migrations(before) {
            let resolve = GeoOp::Resolve {
                obj: obj.clone(),
                transfer,
            };
            let committed = match self.step_there(&to, resolve).await {
                Ok(StepAnswer::Resolved { committed }) => committed,
                Ok(other) => {
                    tracing::warn!(site = %to, reply = ?other, "geo resolve: unexpected answer");
                    round = Err(format!(
                        "resolving transfer {transfer} with site {to}: {other:?}"
                    ));
                    continue;
                }
                // Unreachable: stay migrating (one primary) and ask again later.
                Err(e) => {
                    tracing::info!(site = %to, error = %e, "geo resolve: destination unreachable");
                    round = Err(format!("resolving transfer {transfer} with site {to}: {e}"));
                    continue;
                }
            };
            let step = if committed {
                GeoOp::Commit { obj, transfer }
            } else {
                GeoOp::Abort { obj, transfer }
            };
            tracing::info!(site = %to, transfer, committed, "geo hand-over resolved");
            self.step_here(step).await;
        }
        round
    }

    /// Asks every remote store whether it answers. Its error names the last one that
    /// did not.
    async fn probe(&self) -> Round {
        let mut round = Ok(());
        for (name, addrs) in &self.config.remotes {
            let mut seen = (false, String::from("no address"));
            for addr in addrs {
                match self
                    .link
                    .request(addr, GeoRequest::Ping, self.config.timeout)
                    .await
                {
                    Ok(GeoResponse::Pong { site }) if site == *name => {
                        seen = (true, format!("{addr} answers"));
                        break;
                    }
                    Ok(GeoResponse::Pong { site }) => {
                        seen = (false, format!("{addr} is site {site}, not {name}"))
                    }
                    Ok(other) => seen = (false, format!("{addr}: {other:?}")),
                    Err(e) => seen = (false, e.to_string()),
                }
            }
            if !seen.0 {
                round = Err(format!("remote store {name}: {}", seen.1));
            }
            lock(&self.reach).insert(name.clone(), seen);
        }
        round
    }

    /// Serves other sites and runs the resolver and prober (registered in `workers`) until
    /// `shutdown`.
    pub async fn run(
        self: Arc<Self>,
        cluster: Arc<ClusterNode>,
        shutdown: CancellationToken,
        workers: Workers,
    ) {
        let mut tasks = JoinSet::new();
        let handler = Arc::new(Handler {
            service: Arc::clone(&self),
        });
        let (link, stop) = (Arc::clone(&self.link), shutdown.clone());
        let serve = async move {
            link.serve(handler, stop).await;
            Ok(())
        };
        tasks.spawn(workers.add("geo-serve").serve(serve));
        let (service, for_cluster) = (Arc::clone(&self), Arc::clone(&cluster));
        tasks.spawn(
            workers
                .add("geo-resolve")
                .every(RESOLVE_EVERY, shutdown.clone(), move || {
                    let (service, cluster) = (Arc::clone(&service), Arc::clone(&for_cluster));
                    async move { service.resolve_stuck(&cluster).await }
                }),
        );
        let service = Arc::clone(&self);
        tasks.spawn(
            workers
                .add("geo-probe")
                .every(PROBE_EVERY, shutdown, move || {
                    let service = Arc::clone(&service);
                    async move { service.probe().await }
                }),
        );
        while tasks.join_next().await.is_some() {}
    }
}

/// Answers other sites.
struct Handler {
    service: Arc<GeoService>,
}

impl GeoHandler for Handler {
    fn handle(
        &self,
        from_site: String,
        request: GeoRequest,
    ) -> Pin<Box<dyn Future<Output = GeoResponse> + Send + '_>> {
        Box::pin(async move {
            match request {
                GeoRequest::Ping => GeoResponse::Pong {
                    site: self.service.config.site.clone(),
                },
                // Imports are this site's own decision, never another site's.
                GeoRequest::Step(GeoOp::Import { .. }) => GeoResponse::Refused {
                    reason: "imports are not taken from other sites".into(),
                },
                GeoRequest::Step(op) => {
                    tracing::debug!(%from_site, ?op, "geo step");
                    GeoResponse::Step(answer_of(self.service.step_here(op).await))
                }
            }
        })
    }
}

/// The site link's answer for a local partition leader's reply to a step.
fn answer_of(reply: Reply) -> StepAnswer {
    match reply {
        Reply::GeoExported { value, info, tags } => StepAnswer::Exported {
            value,
            version: info.version,
            timeout: info.timeout,
            uninitialized: info.uninitialized,
            tags,
        },
        Reply::Locked {
            lock_id,
            lock_age_ms,
        } => StepAnswer::Locked {
            lock_id,
            lock_age_ms,
        },
        Reply::NotFound => StepAnswer::NotFound,
        Reply::Moved { site } => StepAnswer::Moved { site },
        Reply::Transfer { committed } => StepAnswer::Resolved { committed },
        Reply::Added { .. } | Reply::Updated { .. } => StepAnswer::Applied,
        Reply::Unavailable { reason, .. } => StepAnswer::Unavailable { reason },
        other => StepAnswer::Unavailable {
            reason: format!("unexpected answer to a migration step: {other:?}"),
        },
    }
}
