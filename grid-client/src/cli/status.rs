//! `gridctl status`: every node asked at once, then the cluster, the site and (with
//! `--workers`) each node's background jobs.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use grid_proto::{NodeStatus, PartitionMap};

use super::{Failure, Out};
use crate::connstr::Gateway;
use crate::GridClient;

/// What one node said when asked for its status.
type Answer = Result<NodeStatus, String>;

/// Longest one node may take to answer `status`: the connection string's connect plus
/// request timeouts, so a node that stopped answering costs that once, not once per row.
fn status_limit(client: &GridClient) -> Duration {
    client.config().connect_timeout + client.config().request_timeout
}

/// Asks every address at once, each within `limit`.
async fn ask_all(
    client: &GridClient,
    addrs: impl Iterator<Item = String>,
    limit: Duration,
) -> HashMap<String, Answer> {
    let asks = addrs.map(|addr| async move {
        let answer = match tokio::time::timeout(limit, client.node_status(&addr)).await {
            Ok(Ok(status)) => Ok(status),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {limit:?}")),
        };
        (addr, answer)
    });
    futures_util::future::join_all(asks)
        .await
        .into_iter()
        .collect()
}

/// The partition map of the node at `addr`, within `limit`.
async fn map_from(client: &GridClient, addr: &str, limit: Duration) -> Option<PartitionMap> {
    let (host, port) = addr.rsplit_once(':')?;
    let mut config = client.config().clone();
    config.gateways = vec![Gateway {
        host: host.trim_matches(|c| c == '[' || c == ']').to_string(),
        port: port.parse().ok()?,
    }];
    let fresh = tokio::time::timeout(limit, GridClient::with_config(config))
        .await
        .ok()?
        .ok()?;
    fresh.partition_map()
}

/// Prints the cluster: every node with its replicas (from the map), the partitions it
/// leads and the objects in them, the map epoch, and how replication is doing. Every
/// node is asked at once, each within [`status_limit`]; the newest map any node has wins
/// (a node cut off from the cluster keeps an old one).
pub(super) async fn print(
    client: &GridClient,
    workers: bool,
    out: &mut Out,
) -> Result<(), Failure> {
    let mut map = client
        .partition_map()
        .ok_or_else(|| Failure::Error("no partition map".into()))?;
    let limit = status_limit(client);
    let mut seen = ask_all(client, map.nodes.iter().map(|n| n.addr.clone()), limit).await;
    let newest = seen
        .iter()
        .filter_map(|(addr, a)| a.as_ref().ok().map(|s| (s.map_epoch, addr.clone())))
        .max();
    if let Some((epoch, addr)) = newest.filter(|(epoch, _)| *epoch > map.epoch) {
        if let Some(fresh) = map_from(client, &addr, limit).await {
            if fresh.epoch >= epoch {
                map = fresh;
                let unasked: Vec<String> = map
                    .nodes
                    .iter()
                    .map(|n| n.addr.clone())
                    .filter(|a| !seen.contains_key(a))
                    .collect();
                seen.extend(ask_all(client, unasked.into_iter(), limit).await);
            }
        }
    }
    print_nodes(&map, &seen, out)?;
    print_sites(&map, &seen, out)?;
    if workers {
        print_workers(&map, &seen, out)?;
    }
    Ok(())
}

/// One row per node, then the totals and a line on replication.
fn print_nodes(
    map: &PartitionMap,
    seen: &HashMap<String, Answer>,
    out: &mut Out,
) -> Result<(), Failure> {
    let mut replicas = BTreeMap::<u64, usize>::new();
    for set in &map.replicas {
        for id in set {
            *replicas.entry(*id).or_default() += 1;
        }
    }
    let active = map.nodes.iter().filter(|n| n.active).count();
    out.line(format_args!(
        "cluster: map epoch {}, {} partitions, {} nodes ({active} active)",
        map.epoch,
        map.partitions,
        map.nodes.len(),
    ))?;
    out.line(format_args!(
        "{:>4}  {:<22} {:<8} {:>8} {:>6} {:>9} {:>10} {:>7} {:>9}  version",
        "node", "address", "state", "replicas", "leads", "objects", "bytes", "locked", "unsettled"
    ))?;
    let (mut objects, mut bytes, mut unsettled, mut down_alive) = (0u64, 0u64, 0u64, 0usize);
    for node in &map.nodes {
        let answer = seen.get(&node.addr);
        let own = answer
            .and_then(|a| a.as_ref().ok())
            .filter(|s| s.node_id == node.id);
        if !node.active {
            // Marked down or left: it holds nothing in the map. Alive under its id, it is
            // out of the cluster and asks to be back by itself.
            let replaced = map
                .nodes
                .iter()
                .find(|o| o.active && o.id != node.id && o.addr == node.addr);
            let (state, detail) = match (replaced, own) {
                (Some(by), _) => ("gone", format!("replaced by node {}", by.id)),
                (None, Some(s)) => {
                    down_alive += 1;
                    (
                        "down",
                        format!(
                            "alive, out of the cluster (its map: epoch {}); rejoins by itself once the control leader reaches it",
                            s.map_epoch
                        ),
                    )
                }
                (None, None) => ("gone", String::new()),
            };
            out.line(format_args!(
                "{:>4}  {:<22} {:<8} {:>8}  {detail}",
                node.id, node.addr, state, 0
            ))?;
            continue;
        }
        let held = replicas.get(&node.id).copied().unwrap_or(0);
        match (own, answer) {
            (Some(s), _) => {
                objects += s.objects;
                bytes += s.value_bytes;
                unsettled += u64::from(s.unsettled);
                let behind = if s.map_epoch < map.epoch {
                    format!("  (map epoch {}: catching up)", s.map_epoch)
                } else {
                    String::new()
                };
                out.line(format_args!(
                    "{:>4}  {:<22} {:<8} {:>8} {:>6} {:>9} {:>10} {:>7} {:>9}  {}{behind}",
                    node.id,
                    node.addr,
                    "active",
                    held,
                    s.partitions_led,
                    s.objects,
                    s.value_bytes,
                    s.locked,
                    s.unsettled,
                    s.server_version
                ))?;
            }
            (None, Some(Ok(s))) => out.line(format_args!(
                "{:>4}  {:<22} {:<8} {:>8}  answers as node {}",
                node.id, node.addr, "active", held, s.node_id
            ))?,
            (None, other) => {
                let why = match other {
                    Some(Err(e)) => e.clone(),
                    _ => "not asked".to_string(),
                };
                out.line(format_args!(
                    "{:>4}  {:<22} {:<8} {:>8}  unreachable: {why}",
                    node.id, node.addr, "active", held
                ))?
            }
        }
    }
    out.line(format_args!("total: {objects} objects, {bytes} bytes"))?;
    out.line(replication_line(map, unsettled, down_alive))
}

/// How replication is doing: replicas per partition in the map, nodes down, and groups
/// whose Raft members do not match the map yet (data moving).
fn replication_line(map: &PartitionMap, unsettled: u64, down_alive: usize) -> String {
    let mut sizes = BTreeMap::<usize, usize>::new();
    for set in &map.replicas {
        *sizes.entry(set.len()).or_default() += 1;
    }
    let sizes: Vec<String> = sizes
        .iter()
        .rev()
        .map(|(replicas, partitions)| format!("{partitions} with {replicas}"))
        .collect();
    let mut line = format!("replication: partitions by replicas: {}", sizes.join(", "));
    let down = map.nodes.iter().filter(|n| !n.active).count();
    if down > 0 {
        line += &format!("; {down} nodes not active ({down_alive} alive and rejoining)");
    }
    if unsettled > 0 {
        line += &format!("; moving: {unsettled} replicas not settled yet");
    } else {
        line += "; settled";
    }
    line
}

/// The site and its remote stores, as the first answering active node sees them.
fn print_sites(
    map: &PartitionMap,
    seen: &HashMap<String, Answer>,
    out: &mut Out,
) -> Result<(), Failure> {
    let first = map
        .nodes
        .iter()
        .filter(|n| n.active)
        .find_map(|n| seen.get(&n.addr).and_then(|a| a.as_ref().ok()));
    let Some(s) = first else {
        return Ok(());
    };
    if s.site.is_empty() {
        return out.line("site: none (geo replication off)");
    }
    out.line(format_args!("site: {}", s.site))?;
    for r in &s.remote_stores {
        out.line(format_args!(
            "remote store {}: {} ({}) [{}]",
            r.name,
            if r.reachable {
                "reachable"
            } else {
                "unreachable"
            },
            r.detail,
            r.addrs.join(",")
        ))?;
    }
    Ok(())
}

/// Each node's background jobs, one line each.
fn print_workers(
    map: &PartitionMap,
    seen: &HashMap<String, Answer>,
    out: &mut Out,
) -> Result<(), Failure> {
    for node in &map.nodes {
        let Some(answer) = seen.get(&node.addr) else {
            continue;
        };
        let s = match answer {
            Ok(s) if s.node_id == node.id => s,
            Ok(s) => {
                out.line(format_args!(
                    "node {} ({}): answered as node {}",
                    node.id, node.addr, s.node_id
                ))?;
                continue;
            }
            Err(e) => {
                out.line(format_args!("node {} ({}): {e}", node.id, node.addr))?;
                continue;
            }
        };
        out.line(format_args!("node {} ({}) workers:", node.id, node.addr))?;
        out.line(format_args!(
            "  {:<14} {:<8} {:>8} {:>8} {:>10} {:>9}  last error",
            "worker", "state", "runs", "failures", "for", "took"
        ))?;
        for w in &s.workers {
            out.line(format_args!(
                "  {:<14} {:<8} {:>8} {:>8} {:>10} {:>9}  {}",
                w.name,
                w.state,
                w.runs,
                w.failures,
                w.since_change_ms.map_or("-".into(), ago),
                format!("{}ms", w.last_took_ms),
                match (&w.last_error, w.since_last_error_ms) {
                    (Some(e), Some(at)) => format!("{} ago: {e}", ago(at)),
                    (Some(e), None) => e.clone(),
                    (None, _) => "-".into(),
                }
            ))?;
        }
    }
    Ok(())
}

/// A time span for a person: `850ms`, `12.4s`, `3m05s`.
fn ago(ms: u64) -> String {
    match ms {
        0..=999 => format!("{ms}ms"),
        1_000..=59_999 => format!("{:.1}s", ms as f64 / 1000.0),
        _ => format!("{}m{:02}s", ms / 60_000, (ms / 1000) % 60),
    }
}

#[cfg(test)]
mod tests {
    use super::ago;

    #[test]
    fn spans_read_in_the_unit_that_fits() {
        assert_eq!(ago(0), "0ms");
        assert_eq!(ago(850), "850ms");
        assert_eq!(ago(12_400), "12.4s");
        assert_eq!(ago(185_000), "3m05s");
    }
}
