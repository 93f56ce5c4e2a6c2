//! Geo replication between two sites, east and west, each a 3-node cluster on loopback
//! linked over QUIC: a read that misses pulls the object and migrates its primary, the
//! old site keeps a proxy that refuses writes, a down site costs a bounded timeout, and
//! concurrent pulls from both sides leave one primary with the latest write.
#![allow(clippy::unwrap_used)] // reason: integration tests; a panic is a failed test

use std::time::{Duration, Instant};

use grid_client::{ClientError, GridClient, RemoteRead, Timeout};
use grid_tests::cluster::TestCluster;
use grid_tests::http::{request, WebProcess};

const NODE: &str = env!("CARGO_BIN_EXE_test-node");
const WEB: &str = env!("CARGO_BIN_EXE_test-web");
const OPTS: &str = ";maxRequestRetries=12;requestTimeout=20s;connectTimeout=1s";

/// Free loopback UDP ports for the nodes' geo endpoints.
fn udp_ports(n: usize) -> Vec<String> {
    let sockets: Vec<std::net::UdpSocket> = (0..n)
        .map(|_| std::net::UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    sockets
        .iter()
        .map(|s| s.local_addr().unwrap().to_string())
        .collect()
}

struct Sites {
    east: TestCluster,
    west: TestCluster,
}

async fn start_sites() -> Sites {
    let (east_geo, west_geo) = (udp_ports(3), udp_ports(3));
    let args = |site: &str, own: &[String], other: &str, theirs: &[String]| -> Vec<Vec<String>> {
        own.iter()
            .map(|addr| {
                vec![
                    "--site".into(),
                    site.into(),
                    "--geo-listen".into(),
                    addr.clone(),
                    "--remote-store".into(),
                    format!("{other}={}", theirs.join(",")),
                    "--geo-timeout".into(),
                    "5s".into(),
                ]
            })
            .collect()
    };
    let common = ["--partitions", "8"];
    let east = TestCluster::start_each(NODE, &common, args("east", &east_geo, "west", &west_geo));
    let west = TestCluster::start_each(NODE, &common, args("west", &west_geo, "east", &east_geo));
    let (east, west) = tokio::join!(east, west);
    Sites {
        east: east.unwrap(),
        west: west.unwrap(),
    }
}

impl Sites {
    /// A client of each site.
    async fn clients(&self) -> (GridClient, GridClient) {
        let (east, west) = (
            self.east.connection_string(OPTS),
            self.west.connection_string(OPTS),
        );
        let (east, west) = tokio::join!(GridClient::connect(&east), GridClient::connect(&west));
        (east.unwrap(), west.unwrap())
    }
}

fn stores(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

async fn found(client: &GridClient, key: &str, from: &[&str]) -> Vec<u8> {
    match client
        .get_remote("sessions", key, &stores(from))
        .await
        .unwrap()
    {
        RemoteRead::Found(object) => object.value,
        other => panic!("{key} not found: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_object_moves_to_the_site_that_reads_it_and_back() {
    let sites = start_sites().await;
    let (east, west) = sites.clients().await;
    let tagged = grid_client::WriteOptions {
        tags: Some(vec!["user:7".into()]),
        timeout: Some(Timeout::Sliding { ms: 600_000 }),
        create: true,
        ..Default::default()
    };
    let body = grid_proto::WriteBody::Whole(b"cart=1".to_vec());
    east.write("sessions", "s1", body, tagged).await.unwrap();
    // Read at west: pulled from east, primary at west now, with its tags: west finds it
    // by tag, east (a proxy now) does not.
    assert_eq!(found(&west, "s1", &["east"]).await, b"cart=1");
    let user = |client: &GridClient| {
        let client = client.clone();
        async move { client.find_by_tag("sessions", "user:7").await.unwrap() }
    };
    assert_eq!(user(&west).await, vec![b"s1".to_vec()]);
    assert!(user(&east).await.is_empty());
    let refused = east
        .put("sessions", "s1", "cart=9", Timeout::None)
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, ClientError::Moved { site } if site == "west"),
        "{refused}"
    );
    west.put("sessions", "s1", "cart=2", Timeout::Sliding { ms: 600_000 })
        .await
        .unwrap();
    // Read back at east: it returns, with west's write and its tags.
    assert_eq!(found(&east, "s1", &["west"]).await, b"cart=2");
    assert_eq!(user(&east).await, vec![b"s1".to_vec()]);
    assert!(user(&west).await.is_empty());
    assert!(matches!(
        west.put("sessions", "s1", "x", Timeout::None).await,
        Err(ClientError::Moved { site }) if site == "east"
    ));
    // A read of something no site has: NotFound, with each store's answer.
    match west
        .get_remote("sessions", "nobody", &stores(&["east"]))
        .await
        .unwrap()
    {
        RemoteRead::NotFound { reasons } => {
            assert_eq!(reasons, vec!["east: not found".to_string()])
        }
        other => panic!("{other:?}"),
    }
    // A locked object stays where it is until its lock is released.
    east.put("sessions", "s3", "busy", Timeout::None)
        .await
        .unwrap();
    let grid_client::LockResult::Acquired { lock_id, .. } = east
        .lock("sessions", "s3", grid_client::LockOptions::default())
        .await
        .unwrap()
    else {
        panic!("not locked")
    };
    assert!(matches!(
        west.get_remote("sessions", "s3", &stores(&["east"])).await.unwrap(),
        RemoteRead::Locked { lock_id: held, .. } if held == lock_id
    ));
    east.unlock("sessions", "s3", lock_id).await.unwrap();
    assert_eq!(found(&west, "s3", &["east"]).await, b"busy");
    // Status shows the site and its reachable remote store.
    let status = west.status().await.unwrap();
    assert_eq!(status.site, "west");
    let seen = grid_tests::wait_until("east probed as reachable", grid_tests::DEADLINE, || async {
        let s = west.status().await.ok()?;
        s.remote_stores
            .iter()
            .find(|r| r.name == "east" && r.reachable)
            .map(|_| ())
    })
    .await;
    seen.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_down_site_costs_a_bounded_timeout_and_the_read_says_why() {
    let mut sites = start_sites().await;
    let west = GridClient::connect(&sites.west.connection_string(OPTS))
        .await
        .unwrap();
    for i in 0..3 {
        sites.east.kill(i).unwrap();
    }
    let started = Instant::now();
    let read = west
        .get_remote("sessions", "missing", &stores(&["east"]))
        .await
        .unwrap();
    let took = started.elapsed();
    match read {
        RemoteRead::NotFound { reasons } => {
            assert_eq!(reasons.len(), 1);
            assert!(reasons[0].starts_with("east: unreachable"), "{reasons:?}");
        }
        other => panic!("{other:?}"),
    }
    // --geo-timeout 5s per store; nothing hangs.
    assert!(took < Duration::from_secs(20), "took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pulls_racing_from_both_sites_leave_one_primary_with_the_latest_write() {
    let sites = start_sites().await;
    let (east, west) = sites.clients().await;
    east.put("sessions", "race", "start", Timeout::None)
        .await
        .unwrap();
    let side = |client: GridClient, me: &'static str, other: &'static str| async move {
        let mut acked: Vec<(Instant, String)> = Vec::new();
        for i in 0..15 {
            let _ = client
                .get_remote("sessions", "race", &stores(&[other]))
                .await;
            let value = format!("{me}-{i}");
            if client
                .put("sessions", "race", value.clone(), Timeout::None)
                .await
                .is_ok()
            {
                acked.push((Instant::now(), value));
            }
        }
        acked
    };
    let (a, b) = tokio::join!(
        tokio::spawn(side(east.clone(), "east", "west")),
        tokio::spawn(side(west.clone(), "west", "east"))
    );
    let mut acked = a.unwrap();
    acked.extend(b.unwrap());
    assert!(!acked.is_empty(), "some writes succeeded");
    let latest = acked.iter().max_by_key(|(at, _)| *at).unwrap().1.clone();
    // Hand-overs left in flight settle (the resolver runs every second).
    let primaries = grid_tests::wait_until("one primary", grid_tests::DEADLINE, || async {
        let here = |c: &GridClient| {
            let c = c.clone();
            async move {
                match c.get("sessions", "race").await {
                    Ok(Some(o)) => Some(Some(o.value)),
                    Err(ClientError::Moved { .. }) => Some(None),
                    _ => None,
                }
            }
        };
        let (e, w) = (here(&east).await?, here(&west).await?);
        Some([e, w])
    })
    .await
    .unwrap();
    let values: Vec<Vec<u8>> = primaries.into_iter().flatten().collect();
    assert_eq!(values.len(), 1, "exactly one primary");
    assert_eq!(
        values[0],
        latest.into_bytes(),
        "with the latest acknowledged write"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_web_session_started_at_east_continues_at_west() {
    let sites = start_sites().await;
    let east_web = WebProcess::start(WEB, &sites.east.connection_string(OPTS), &[]).unwrap();
    let west_web = WebProcess::start(
        WEB,
        &sites.west.connection_string(OPTS),
        &["remoteStores=east"],
    )
    .unwrap();
    let first = request(east_web.addr(), "GET", "/counter", None)
        .await
        .unwrap();
    assert_eq!(first.body, "1");
    let cookie = first.set_cookie.unwrap();
    assert_eq!(
        request(east_web.addr(), "GET", "/counter", Some(&cookie))
            .await
            .unwrap()
            .body,
        "2"
    );
    let at_west = request(west_web.addr(), "GET", "/counter", Some(&cookie))
        .await
        .unwrap();
    assert_eq!(
        (at_west.status, at_west.body.as_str()),
        (200, "3"),
        "same items"
    );
    assert!(at_west.set_cookie.is_none(), "same session");
}

/// Runs a migration step on the partition leader of `cluster`, as a node would: over a
/// connection that proved the cluster secret.
async fn step_on_leader(cluster: &TestCluster, op: grid_proto::GeoOp) -> grid_proto::Reply {
    use grid_client::conn::{Connection, Dial};
    use grid_proto::peer_auth::PeerKey;
    use grid_proto::{Reply, Request};
    let dial = Dial {
        auth_token: None,
        client_name: "test".into(),
        connect_timeout: grid_tests::DEADLINE,
        tls: None,
        peer_key: Some(PeerKey::new(
            grid_tests::cluster::TEST_CLUSTER_SECRET.as_bytes(),
        )),
    };
    grid_tests::wait_until(
        "the partition leader answered",
        grid_tests::DEADLINE,
        || {
            let (op, dial) = (op.clone(), dial.clone());
            let addrs: Vec<_> = cluster.live().map(|n| n.client_addr()).collect();
            async move {
                for addr in addrs {
                    let conn = Connection::open(&addr.to_string(), &dial).await.ok()?;
                    let geo = Request::Geo(op.clone());
                    match conn.call(&geo, grid_tests::DEADLINE).await.ok()? {
                        Reply::NotLeader { .. } => continue,
                        reply => return Some(reply),
                    }
                }
                None
            }
        },
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hand_over_cut_short_by_a_crash_resolves_to_one_primary() {
    use grid_proto::{GeoOp, ObjKey, Reply};
    let sites = start_sites().await;
    let (east, west) = sites.clients().await;
    let obj = |k: &str| ObjKey::new("sessions", k);

    // Crash before the import: east exported k1, west never imported it.
    east.put("sessions", "k1", "one", Timeout::None)
        .await
        .unwrap();
    let export = GeoOp::Export {
        obj: obj("k1"),
        transfer: 101,
        to_site: "west".into(),
    };
    let exported = step_on_leader(&sites.east, export).await;
    let Reply::GeoExported { value, info, tags } = exported else {
        panic!("{exported:?}")
    };
    // East's resolver asks west, which fences the transfer; east is primary again.
    grid_tests::wait_until("east primary again", grid_tests::DEADLINE, || async {
        (east.get("sessions", "k1").await.ok()??.value == b"one").then_some(())
    })
    .await
    .unwrap();
    let late = GeoOp::Import {
        obj: obj("k1"),
        value,
        version: info.version,
        timeout: info.timeout,
        uninitialized: info.uninitialized,
        transfer: 101,
        tags,
    };
    let refused = step_on_leader(&sites.west, late).await;
    assert!(
        matches!(&refused, Reply::Unavailable { code: grid_proto::Unavailability::HandOverAborted, reason } if reason.contains("aborted")),
        "{refused:?}"
    );
    assert!(west.get("sessions", "k1").await.unwrap().is_none());

    // Crash after the import: west imported k2, the commit never reached east.
    east.put("sessions", "k2", "two", Timeout::None)
        .await
        .unwrap();
    let export = GeoOp::Export {
        obj: obj("k2"),
        transfer: 202,
        to_site: "west".into(),
    };
    let Reply::GeoExported {
        value, info, tags, ..
    } = step_on_leader(&sites.east, export).await
    else {
        panic!("export refused")
    };
    let import = GeoOp::Import {
        obj: obj("k2"),
        value,
        version: info.version,
        timeout: info.timeout,
        uninitialized: info.uninitialized,
        transfer: 202,
        tags,
    };
    assert!(matches!(
        step_on_leader(&sites.west, import).await,
        Reply::Added { .. }
    ));
    grid_tests::wait_until("east keeps a proxy", grid_tests::DEADLINE, || async {
        matches!(east.get("sessions", "k2").await, Err(ClientError::Moved { site }) if site == "west")
            .then_some(())
    })
    .await
    .unwrap();
    assert_eq!(
        west.get("sessions", "k2").await.unwrap().unwrap().value,
        b"two"
    );
}
