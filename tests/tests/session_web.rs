//! The session provider end to end: two (or more) demo web servers as real processes on
//! one real grid, driven over HTTP with a session cookie.
#![allow(clippy::unwrap_used)] // reason: integration tests; a panic is a failed test

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use grid_client::{GridClient, LockOptions, LockResult};
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_session_follows_its_user_across_servers_and_its_requests_run_one_at_a_time() {
    let (_cluster, cs) = grid().await;
    let a = WebProcess::start(WEB, &cs, &[]).unwrap();
    let b = WebProcess::start(WEB, &cs, &[]).unwrap();
    let first = get(&a, "/counter", None).await;
    assert_eq!((first.status, first.body.as_str()), (200, "1"));
    let cookie = first.set_cookie.expect("a new session sets its cookie");
    assert!(cookie.starts_with("ASP.NET_SessionId="), "{cookie}");
    let second = get(&b, "/counter", Some(&cookie)).await;
    assert_eq!((second.status, second.body.as_str()), (200, "2"));
    assert!(
        second.set_cookie.is_none(),
        "an existing session keeps its cookie"
    );
    assert_eq!(get(&a, "/peek", Some(&cookie)).await.body, "2");

    // N concurrent requests on one session, spread over both servers: each increments
    // under the session's lock, so they see every value once and end at exactly N more.
    const N: usize = 20;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..N {
        let addr = if i % 2 == 0 { a.addr() } else { b.addr() };
        let cookie = cookie.clone();
        tasks.push(tokio::spawn(async move {
            request(addr, "GET", "/counter", Some(&cookie))
                .await
                .unwrap()
        }));
    }
    let mut seen = BTreeSet::new();
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        seen.insert(r.body.parse::<usize>().unwrap());
    }
    let took = started.elapsed();
    assert_eq!(seen, (3..3 + N).collect::<BTreeSet<_>>());
    assert_eq!(
        get(&b, "/peek", Some(&cookie)).await.body,
        (N + 2).to_string()
    );
    // ASP.NET's module polls a locked session every 500 ms; queued hand-off does not.
    assert!(
        took < Duration::from_millis(500) * N as u32,
        "{N} serialized requests took {took:?}"
    );
    println!("{N} concurrent requests on one session: {took:?}");

    // An unknown id gets a new session (regenerateExpiredSessionId=true).
    let stale = "ASP.NET_SessionId=aaaaaaaaaaaaaaaaaaaaaaaa";
    let fresh = get(&a, "/counter", Some(stale)).await;
    assert_eq!(fresh.body, "1");
    assert_ne!(fresh.set_cookie.as_deref(), Some(stale));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_concurrent_requests_allowed_reads_do_not_wait_for_a_lock() {
    let (_cluster, cs) = grid().await;
    let web = WebProcess::start(WEB, &cs, &["allowConcurrentRequestsPerSession=true"]).unwrap();
    let created = get(&web, "/counter", None).await;
    let cookie = created.set_cookie.unwrap();
    // Someone holds the session's lock, for longer than this test runs.
    let client = GridClient::connect(&cs).await.unwrap();
    let held = LockOptions {
        lease: Some(Duration::from_secs(600)),
        ..LockOptions::default()
    };
    let lock = client.lock(NS, session_id(&cookie), held).await.unwrap();
    assert!(matches!(lock, LockResult::Acquired { .. }), "{lock:?}");
    let read = get(&web, "/peek", Some(&cookie)).await;
    assert_eq!((read.status, read.body.as_str()), (200, "1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn session_end_runs_once_across_the_farm_for_expired_and_abandoned_sessions() {
    let (cluster, cs) = grid().await;
    let settings = ["handleSessionEnd=true", "timeout=1s"];
    let a = WebProcess::start(WEB, &cs, &settings).unwrap();
    let b = WebProcess::start(WEB, &cs, &settings).unwrap();
    let idle = get(&a, "/counter", None).await.set_cookie.unwrap();
    let idle_id = session_id(&idle).to_string();
    let ended_lines = |id: String| {
        let (a, b) = (a.addr(), b.addr());
        async move {
            let mut lines = Vec::new();
            for addr in [a, b] {
                let body = request(addr, "GET", "/ended", None).await.ok()?.body;
                lines.extend(
                    body.lines()
                        .filter(|l| l.starts_with(&id))
                        .map(str::to_string),
                );
            }
            Some(lines)
        }
    };
    wait_until("Session_End of the idle session", DEADLINE, || async {
        let lines = ended_lines(idle_id.clone()).await?;
        (!lines.is_empty()).then_some(())
    })
    .await
    .unwrap();
    // Every event acknowledged: nothing can be delivered again after this.
    let client = GridClient::connect(&cs).await.unwrap();
    cluster.wait_events_acknowledged(&client).await.unwrap();
    let lines = ended_lines(idle_id.clone()).await.unwrap();
    assert_eq!(lines, vec![format!("{idle_id} 1 Expired")], "exactly once");

    let gone = get(&b, "/counter", None).await.set_cookie.unwrap();
    assert_eq!(get(&b, "/counter", Some(&gone)).await.body, "2");
    let abandoned = request(b.addr(), "POST", "/abandon", Some(&gone))
        .await
        .unwrap();
    assert_eq!(abandoned.status, 200);
    let lines = ended_lines(session_id(&gone).to_string()).await.unwrap();
    assert_eq!(lines, vec![format!("{} 2 Abandoned", session_id(&gone))]);
    assert!(
        client.get(NS, session_id(&gone)).await.unwrap().is_none(),
        "abandoned sessions are removed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lock_left_by_a_killed_web_server_is_taken_over_after_execution_timeout() {
    let (_cluster, cs) = grid().await;
    let settings = ["executionTimeout=2s"];
    let a = WebProcess::start(WEB, &cs, &settings).unwrap();
    let b = WebProcess::start(WEB, &cs, &settings).unwrap();
    let cookie = get(&a, "/counter", None).await.set_cookie.unwrap();
    // A slow page on a holds the session's lock...
    let slow = tokio::spawn({
        let (addr, cookie) = (a.addr(), cookie.clone());
        async move { request(addr, "GET", "/work?ms=600000", Some(&cookie)).await }
    });
    let client = GridClient::connect(&cs).await.unwrap();
    wait_until("the slow page holds the lock", DEADLINE, || async {
        let object = client.get(NS, session_id(&cookie)).await.ok()??;
        object.info.lock_id.map(|_| ())
    })
    .await
    .unwrap();
    // ...and a dies mid-request.
    a.kill();
    assert!(
        slow.await.unwrap().is_err(),
        "the killed server never answered"
    );
    let next = get(&b, "/counter", Some(&cookie)).await;
    assert_eq!((next.status, next.body.as_str()), (200, "2"), "taken over");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn more_waiting_requests_than_the_queue_limit_get_a_clear_503() {
    let (cluster, cs) = grid().await;
    let web = WebProcess::start(WEB, &cs, &["requestQueueLimitPerSession=2"]).unwrap();
    let cookie = get(&web, "/counter", None).await.set_cookie.unwrap();
    let client = GridClient::connect(&cs).await.unwrap();
    // Hold the lock directly, then queue two requests behind it.
    let lock = client
        .lock(NS, session_id(&cookie), LockOptions::default())
        .await
        .unwrap();
    let LockResult::Acquired { lock_id, .. } = lock else {
        panic!("{lock:?}")
    };
    let waiting: Vec<_> = (0..2)
        .map(|_| {
            let (addr, cookie) = (web.addr(), cookie.clone());
            tokio::spawn(async move { request(addr, "GET", "/counter", Some(&cookie)).await })
        })
        .collect();
    wait_until("two requests queued for the lock", DEADLINE, || async {
        let waiters = cluster.sum_status(&client, |s| s.lock_waiters).await?;
        (waiters == 2).then_some(())
    })
    .await
    .unwrap();
    let refused = get(&web, "/counter", Some(&cookie)).await;
    assert_eq!(refused.status, 503);
    assert!(
        refused.body.contains("requestQueueLimitPerSession=2"),
        "{}",
        refused.body
    );
    client
        .unlock(NS, session_id(&cookie), lock_id)
        .await
        .unwrap();
    let mut counts = BTreeSet::new();
    for w in waiting {
        let r = w.await.unwrap().unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        counts.insert(r.body);
    }
    assert_eq!(counts, BTreeSet::from(["2".to_string(), "3".to_string()]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tower_sessions_apps_keep_their_records_in_the_grid() {
    use session_provider::GridSessionStore;
    use time::OffsetDateTime;
    use tower_sessions::session::{Id, Record};
    use tower_sessions::SessionStore;

    let cluster = TestCluster::start(NODE, 1, &["--partitions", "4"])
        .await
        .unwrap();
    let client = GridClient::connect(&cluster.connection_string(""))
        .await
        .unwrap();
    let store = GridSessionStore::new(client.clone(), "tower");
    let mut record = Record {
        id: Id::default(),
        data: [("user".to_string(), serde_json::json!("ann"))].into(),
        expiry_date: OffsetDateTime::now_utc() + time::Duration::minutes(5),
    };
    let taken = record.id;
    client
        .put(
            "tower",
            taken.to_string(),
            "someone else's",
            grid_client::Timeout::None,
        )
        .await
        .unwrap();
    store.create(&mut record).await.unwrap();
    assert_ne!(record.id, taken, "a taken id is replaced, not overwritten");
    assert_eq!(store.load(&record.id).await.unwrap(), Some(record.clone()));
    record.data.insert("cart".into(), serde_json::json!([1, 2]));
    store.save(&record).await.unwrap();
    assert_eq!(store.load(&record.id).await.unwrap(), Some(record.clone()));
    store.delete(&record.id).await.unwrap();
    assert_eq!(store.load(&record.id).await.unwrap(), None);
    // The grid expires records at their expiry date.
    let mut short = Record {
        id: Id::default(),
        data: Default::default(),
        expiry_date: OffsetDateTime::now_utc() + time::Duration::milliseconds(300),
    };
    store.create(&mut short).await.unwrap();
    wait_until("the record expired in the grid", DEADLINE, || async {
        client
            .get("tower", short.id.to_string())
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await
    .unwrap();
    assert_eq!(store.load(&short.id).await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_operations_keep_asp_net_s_contract() {
    use session_provider::{
        ItemResult, ProviderError, ProviderSettings, SessionAction, SessionItems,
        SessionStateProvider,
    };

    let cluster = TestCluster::start(NODE, 1, &["--partitions", "4"])
        .await
        .unwrap();
    let mut settings = ProviderSettings::default();
    settings
        .set("connectionString", &cluster.connection_string(""))
        .unwrap();
    settings.set("executionTimeout", "60s").unwrap();
    let p = SessionStateProvider::connect(settings, "contract")
        .await
        .unwrap();
    let wait = Duration::ZERO;

    // Created uninitialized: the first exclusive read reports InitializeItem, once.
    p.create_uninitialized_item("s1", Duration::from_secs(60))
        .await
        .unwrap();
    let ItemResult::Found(first) = p.get_item_exclusive("s1", wait).await.unwrap() else {
        panic!("not found")
    };
    assert_eq!(first.action, SessionAction::InitializeItem);
    assert!(first.items.is_empty());
    let lock_id = first.lock_id.unwrap();
    // Locked: a plain read and another exclusive read both say who holds it.
    for result in [
        p.get_item("s1").await.unwrap(),
        p.get_item_exclusive("s1", wait).await.unwrap(),
    ] {
        let ItemResult::Locked {
            lock_id: holder, ..
        } = result
        else {
            panic!("{result:?}")
        };
        assert_eq!(holder, lock_id);
    }
    // Only the holder's lock id releases or writes.
    assert!(matches!(
        p.release_item_exclusive("s1", lock_id + 1000).await,
        Err(ProviderError::LockLost)
    ));
    let mut items = SessionItems::default();
    items.set("user", &"ann").unwrap();
    assert!(matches!(
        p.set_and_release_item_exclusive("s1", &items, Some(lock_id + 1000), false)
            .await,
        Err(ProviderError::LockLost)
    ));
    p.set_and_release_item_exclusive("s1", &items, Some(lock_id), false)
        .await
        .unwrap();
    let ItemResult::Found(second) = p.get_item("s1").await.unwrap() else {
        panic!("not found")
    };
    assert_eq!(second.action, SessionAction::None);
    assert_eq!(second.items.get::<String>("user").unwrap().unwrap(), "ann");
    p.reset_item_timeout("s1").await.unwrap();
    // Remove needs the lock when locked.
    let ItemResult::Found(third) = p.get_item_exclusive("s1", wait).await.unwrap() else {
        panic!("not found")
    };
    assert!(p.remove_item("s1", None).await.is_err());
    p.remove_item("s1", third.lock_id).await.unwrap();
    assert!(matches!(
        p.get_item("s1").await.unwrap(),
        ItemResult::NotFound
    ));
}
