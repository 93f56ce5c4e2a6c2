//! What sessions do beyond ASP.NET's contract, on real node and web server processes:
//! tags found and removed across partitions and through a failover, "log out
//! everywhere" over two web servers, per-item write-back (only the change crosses the
//! wire), concurrent requests that change different items, and id rotation at login.
#![allow(clippy::unwrap_used)] // reason: integration tests; a panic is a failed test

use std::collections::BTreeSet;

use grid_client::{ClientError, GridClient, LockOptions, LockResult, Timeout, WriteOptions};
use grid_proto::WriteBody;
use grid_tests::cluster::TestCluster;
use grid_tests::http::{request, session_id, web_grid, HttpResponse, WebProcess};
use grid_tests::{wait_until, DEADLINE};

const NODE: &str = env!("CARGO_BIN_EXE_test-node");
const WEB: &str = env!("CARGO_BIN_EXE_test-web");
/// The demo site's namespace (its application name).
const NS: &str = "web-demo";

async fn grid() -> (TestCluster, String) {
    web_grid(NODE).await.unwrap()
}

async fn get(web: &WebProcess, path: &str, cookie: Option<&str>) -> HttpResponse {
    web.get(path, cookie).await.unwrap()
}

fn tagged(tags: &[&str]) -> WriteOptions {
    WriteOptions {
        tags: Some(tags.iter().map(|t| t.to_string()).collect()),
        create: true,
        ..WriteOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tags_are_found_and_removed_across_partitions_and_through_a_failover() {
    let (mut cluster, cs) = grid().await;
    let client = GridClient::connect(&cs).await.unwrap();
    // 40 objects over 8 partitions: the even ones tagged `even`, all tagged `all`.
    let mut even = Vec::new();
    for i in 0..40 {
        let key = format!("k{i:02}");
        let tags: &[&str] = if i % 2 == 0 {
            &["all", "even"]
        } else {
            &["all"]
        };
        let body = WriteBody::Whole(vec![b'v'; 10]);
        client
            .write("tags", &key, body, tagged(tags))
            .await
            .unwrap();
        if i % 2 == 0 {
            even.push(key.into_bytes());
        }
    }
    let partitions: BTreeSet<u32> = even
        .iter()
        .map(|k| grid_proto::partition_of(grid_proto::key_hash("tags", k), 8))
        .collect();
    assert!(
        partitions.len() > 3,
        "spread over partitions: {partitions:?}"
    );
    assert_eq!(client.find_by_tag("tags", "even").await.unwrap(), even);
    assert_eq!(
        client.find_by_tag("other-ns", "even").await.unwrap(),
        Vec::<Vec<u8>>::new()
    );
    // A plain rewrite keeps the tags; a write naming tags replaces them.
    client
        .put("tags", "k00", b"new".to_vec(), Timeout::None)
        .await
        .unwrap();
    let untag = WriteOptions {
        tags: Some(Vec::new()),
        ..WriteOptions::default()
    };
    client
        .write("tags", "k02", WriteBody::Keep, untag)
        .await
        .unwrap();
    even.remove(1);
    assert_eq!(client.find_by_tag("tags", "even").await.unwrap(), even);
    // Bad tags are refused with the reason.
    let too_many: Vec<&str> = vec!["t"; 9];
    let refused = client
        .write("tags", "k99", WriteBody::Keep, tagged(&too_many))
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("at most 8"), "{refused}");

    // A locked tagged object goes too; its holder then finds its lock lost.
    let lock = client
        .lock("tags", "k04", LockOptions::default())
        .await
        .unwrap();
    let LockResult::Acquired { lock_id, .. } = lock else {
        panic!("{lock:?}")
    };

    // Kill a node (it leads some partitions): the tags were replicated with the objects.
    cluster.kill(0).unwrap();
    let cs2 = cluster.connection_string(";requestTimeout=10s;connectTimeout=1s");
    let client = GridClient::connect(&cs2).await.unwrap();
    let found = wait_until("find after the failover", DEADLINE, || async {
        client.find_by_tag("tags", "even").await.ok()
    })
    .await
    .unwrap();
    assert_eq!(found, even);
    assert_eq!(client.remove_by_tag("tags", "even").await.unwrap(), 19);
    assert!(client.find_by_tag("tags", "even").await.unwrap().is_empty());
    let lost = client
        .write(
            "tags",
            "k04",
            WriteBody::Whole(b"late".to_vec()),
            WriteOptions {
                lock_id: Some(lock_id),
                unlock: true,
                ..WriteOptions::default()
            },
        )
        .await;
    assert!(matches!(lost, Err(ClientError::LockLost)), "{lost:?}");
    // The odd ones are untouched.
    assert_eq!(client.find_by_tag("tags", "all").await.unwrap().len(), 20);
    assert!(client.get("tags", "k01").await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_on_more_keys_than_a_page_holds_is_found_page_by_page() {
    // A page is half the value limit: 2 KB here, so 150 keys of 40 bytes take 3 pages.
    let node =
        grid_tests::process::NodeProcess::start(NODE, &["--max-value-bytes", "4096"]).unwrap();
    let client = GridClient::connect(&node.connection_string(""))
        .await
        .unwrap();
    let mut keys = Vec::new();
    for i in 0..150 {
        let key = format!("{i:040}");
        let body = WriteBody::Whole(b"v".to_vec());
        client
            .write("pages", &key, body, tagged(&["many"]))
            .await
            .unwrap();
        keys.push(key.into_bytes());
    }
    assert_eq!(client.find_by_tag("pages", "many").await.unwrap(), keys);
    assert_eq!(client.remove_by_tag("pages", "many").await.unwrap(), 150);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn log_out_everywhere_over_two_web_servers_ends_each_session_once() {
    let (cluster, cs) = grid().await;
    let settings = ["handleSessionEnd=true"];
    let a = WebProcess::start(WEB, &cs, &settings).unwrap();
    let b = WebProcess::start(WEB, &cs, &settings).unwrap();
    let client = GridClient::connect(&cs).await.unwrap();
    // Ann signs in from four devices, over both servers; Bob from one.
    let mut ann = Vec::new();
    for i in 0..4 {
        let web = if i % 2 == 0 { &a } else { &b };
        let before = get(web, "/counter", None).await.set_cookie.unwrap();
        let login = get(web, "/login?user=ann", Some(&before)).await;
        assert_eq!(
            (login.status, login.body.as_str()),
            (200, "logged in as ann\n")
        );
        let after = login.set_cookie.expect("login gives the session a new id");
        assert_ne!(session_id(&after), session_id(&before), "a new id at login");
        // The items moved to the new id; the old id names no session any more.
        let items = get(web, "/items", Some(&after)).await.body;
        assert_eq!(items, r#"{"counter":1,"user":"ann"}"#);
        assert!(client.get(NS, session_id(&before)).await.unwrap().is_none());
        let old = get(web, "/items", Some(&before)).await.body;
        assert_eq!(old, "{}");
        ann.push(after);
    }
    let bob = get(&a, "/login?user=bob", None).await.set_cookie.unwrap();
    let ann_ids: Vec<String> = ann.iter().map(|c| session_id(c).to_string()).collect();
    let mut expected = ann_ids.clone();
    expected.sort();
    let devices = get(&b, "/devices", Some(&ann[0])).await;
    assert_eq!(devices.body.lines().collect::<Vec<_>>(), expected);

    let out = request(b.addr(), "POST", "/logout-everywhere", Some(&ann[1]))
        .await
        .unwrap();
    assert_eq!((out.status, out.body.as_str()), (200, "4\n"));
    // Session_End runs once for each of Ann's sessions, on one server of the farm each
    // (the revocations are events of the grid, like expirations).
    let ended = || async {
        let mut lines = Vec::new();
        for web in [&a, &b] {
            let body = request(web.addr(), "GET", "/ended", None).await.ok()?.body;
            lines.extend(body.lines().map(str::to_string));
        }
        lines.sort();
        Some(lines)
    };
    wait_until("Session_End of the revoked sessions", DEADLINE, || async {
        ended().await.filter(|lines| lines.len() >= 4)
    })
    .await
    .unwrap();
    // Every event acknowledged: nothing can be delivered again after this.
    cluster.wait_events_acknowledged(&client).await.unwrap();
    let mut want: Vec<String> = ann_ids.iter().map(|id| format!("{id} 1 Revoked")).collect();
    // The ids of the sessions before login were moved, not ended.
    want.sort();
    assert_eq!(ended().await.unwrap(), want);
    for cookie in &ann {
        assert_eq!(get(&a, "/items", Some(cookie)).await.body, "{}");
    }
    assert_eq!(
        get(&b, "/items", Some(&bob)).await.body,
        r#"{"user":"bob"}"#
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_that_set_different_items_all_land() {
    let (_cluster, cs) = grid().await;
    let concurrent = ["allowConcurrentRequestsPerSession=true"];
    let a = WebProcess::start(WEB, &cs, &concurrent).unwrap();
    let b = WebProcess::start(WEB, &cs, &concurrent).unwrap();
    let cookie = get(&a, "/set?item=seed&value=0", None)
        .await
        .set_cookie
        .unwrap();
    const N: usize = 20;
    let mut tasks = Vec::new();
    for i in 0..N {
        let addr = if i % 2 == 0 { a.addr() } else { b.addr() };
        let cookie = cookie.clone();
        tasks.push(tokio::spawn(async move {
            let path = format!("/set?item=i{i:02}&value=v{i}");
            request(addr, "GET", &path, Some(&cookie)).await.unwrap()
        }));
    }
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let items: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&get(&b, "/items", Some(&cookie)).await.body).unwrap();
    let mut want: BTreeSet<String> = (0..N).map(|i| format!("i{i:02}")).collect();
    want.insert("seed".into());
    assert_eq!(items.keys().cloned().collect::<BTreeSet<_>>(), want);
    for i in 0..N {
        assert_eq!(items[&format!("i{i:02}")], format!("v{i}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_session_writes_back_only_its_change() {
    use session_provider::{ItemResult, ProviderSettings, SessionItems, SessionStateProvider};

    let (_cluster, cs) = grid().await;
    let mut settings = ProviderSettings::default();
    settings.set("connectionString", &cs).unwrap();
    let p = SessionStateProvider::connect(settings, "large")
        .await
        .unwrap();
    // 256 KB of items that do not compress much (hex of a pseudo-random sequence).
    let mut items = SessionItems::default();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in 0..16 {
        let text: String = (0..2048)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                format!("{:08x}", x as u32)
            })
            .collect::<String>()[..16 * 1024]
            .to_string();
        items.set(&format!("part{i}"), &text).unwrap();
    }
    items.set("small", &"x".repeat(100)).unwrap();
    let before = p.client().wire_bytes().sent;
    p.set_and_release_item_exclusive("s", &items, None, true)
        .await
        .unwrap();
    let whole = p.client().wire_bytes().sent - before;
    assert!(
        whole > 100 * 1024,
        "the first write carries the session: {whole}"
    );

    let ItemResult::Found(held) = p
        .get_item_exclusive("s", std::time::Duration::ZERO)
        .await
        .unwrap()
    else {
        panic!("not found")
    };
    let mut changed = held.items.clone();
    changed.set("small", &"y".repeat(100)).unwrap();
    let before = p.client().wire_bytes().sent;
    p.set_and_release_item_exclusive("s", &changed, held.lock_id, false)
        .await
        .unwrap();
    let delta = p.client().wire_bytes().sent - before;
    assert!(
        delta < 1024,
        "a 100-byte change sends {delta} bytes; the session is {whole}"
    );
    // The next request's lock-read comes from the near cache, which applied the same
    // change to its copy: a few bytes on the wire, and the session as the node has it.
    let before = p.client().wire_bytes().received;
    let ItemResult::Found(next) = p
        .get_item_exclusive("s", std::time::Duration::ZERO)
        .await
        .unwrap()
    else {
        panic!("not found")
    };
    let received = p.client().wire_bytes().received - before;
    assert!(received < 1024, "the lock-read received {received} bytes");
    assert_eq!(next.items, changed);
    p.release_item_exclusive("s", next.lock_id.unwrap())
        .await
        .unwrap();
    // The node merged it: the whole session reads back, with the change, from a client
    // with nothing cached.
    let fresh = GridClient::connect(&cs).await.unwrap();
    let stored = fresh.get("large", "s").await.unwrap().unwrap();
    let read = SessionItems::decode(&stored.value).unwrap();
    assert_eq!(read, changed);
    assert_eq!(read.len(), 17);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_stored_whole_by_an_earlier_release_is_rewritten_as_items() {
    let (_cluster, cs) = grid().await;
    let web = WebProcess::start(WEB, &cs, &[]).unwrap();
    let cookie = get(&web, "/counter", None).await.set_cookie.unwrap();
    let client = GridClient::connect(&cs).await.unwrap();
    // The form sessions had before item maps: one JSON object.
    client
        .put(
            NS,
            session_id(&cookie),
            br#"{"counter":5}"#.to_vec(),
            Timeout::None,
        )
        .await
        .unwrap();
    let next = get(&web, "/counter", Some(&cookie)).await;
    assert_eq!((next.status, next.body.as_str()), (200, "6"));
    let stored = client.get(NS, session_id(&cookie)).await.unwrap().unwrap();
    assert!(
        grid_proto::items::decode(&stored.value).is_ok(),
        "now an item map"
    );
    assert_eq!(get(&web, "/counter", Some(&cookie)).await.body, "7");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_rotation_racing_a_revocation_does_not_bring_the_session_back() {
    use session_provider::{ItemResult, ProviderSettings, SessionStateProvider};

    let (_cluster, cs) = grid().await;
    let mut settings = ProviderSettings::default();
    settings.set("connectionString", &cs).unwrap();
    let p = SessionStateProvider::connect(settings, "rotate")
        .await
        .unwrap();
    let mut items = session_provider::SessionItems::default();
    items.set("user", &"ann").unwrap();
    items.tag("user:ann").unwrap();
    p.set_and_release_item_exclusive("old", &items, None, true)
        .await
        .unwrap();
    let ItemResult::Found(held) = p
        .get_item_exclusive("old", std::time::Duration::ZERO)
        .await
        .unwrap()
    else {
        panic!("not found")
    };
    // While the request holds it, the user logs out everywhere.
    assert_eq!(p.abandon_tagged("user:ann").await.unwrap(), vec!["old"]);
    let moved = p
        .rotate_id("old", "new", &held.items, held.lock_id)
        .await
        .unwrap();
    assert!(!moved);
    assert!(matches!(
        p.get_item("new").await.unwrap(),
        ItemResult::NotFound
    ));
    assert!(p.sessions_with_tag("user:ann").await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_settings_name_the_connection_string_and_allow_concurrent_requests() {
    let (_cluster, cs) = grid().await;
    let dir = grid_tests::scratch::ScratchDir::new("app-settings").unwrap();
    let file = dir.path().join("web.toml");
    let config = format!(
        "[sessionState]\nconnectionStringAppSetting = \"grid\"\n\n\
         [appSettings]\ngrid = \"{cs}\"\n\"aspnet:AllowConcurrentRequestsPerSession\" = \"true\"\n"
    );
    std::fs::write(&file, config).unwrap();
    let config = ["--config", file.to_str().unwrap()];
    let web = WebProcess::start_with(WEB, &config, &[]).unwrap();
    let cookie = get(&web, "/counter", None).await.set_cookie.unwrap();
    let id = session_id(&cookie);
    let client = GridClient::connect(&cs).await.unwrap();
    let held = || LockOptions {
        lease: Some(std::time::Duration::from_secs(600)),
        ..LockOptions::default()
    };
    let lock_id = |lock: LockResult| match lock {
        LockResult::Acquired { lock_id, .. } => lock_id,
        other => panic!("{other:?}"),
    };
    // Concurrent mode (from the app setting): a read neither waits for nor touches a
    // lock someone else holds.
    let first = lock_id(client.lock(NS, id, held()).await.unwrap());
    let read = get(&web, "/peek", Some(&cookie)).await;
    assert_eq!((read.status, read.body.as_str()), (200, "1"));
    client.unlock(NS, id, first).await.unwrap();
    drop(web);
    // The attribute takes precedence over the app setting: exclusive again, so the read
    // queues for the lock and, past executionTimeout, takes it over.
    let exclusive = WebProcess::start_with(
        WEB,
        &config,
        &[
            "allowConcurrentRequestsPerSession=false",
            "executionTimeout=1s",
        ],
    )
    .unwrap();
    let second = lock_id(client.lock(NS, id, held()).await.unwrap());
    let read = get(&exclusive, "/peek", Some(&cookie)).await;
    assert_eq!((read.status, read.body.as_str()), (200, "1"));
    assert!(matches!(
        client.unlock(NS, id, second).await,
        Err(ClientError::LockLost)
    ));
}
