//! The `gridctl` contract, as a real process against a real node: values from stdin or
//! the command line, the value on stdout, exit 0 / 1 (not found, locked) / 2 (errors)
//! with one-line messages.
#![allow(clippy::unwrap_used)] // reason: integration tests; a panic is a failed test

use std::process::Command;
use std::time::Duration;

use grid_tests::process::{run_with_deadline, NodeProcess};

const NODE: &str = env!("CARGO_BIN_EXE_test-node");
const GRIDCTL: &str = env!("CARGO_BIN_EXE_test-gridctl");
const DEADLINE: Duration = Duration::from_secs(30);

/// Runs gridctl with `args`, the connection string from the environment, and `stdin`.
fn gridctl(cs: &str, args: &[&str], stdin: Option<&[u8]>) -> (i32, Vec<u8>, String) {
    let mut cmd = Command::new(GRIDCTL);
    cmd.args(args).env("GRID_CONNECTION", cs);
    let (status, out, err) = run_with_deadline(&mut cmd, stdin, DEADLINE).unwrap();
    (status.code().unwrap(), out, err)
}

#[test]
fn gridctl_follows_its_contract() {
    let node = NodeProcess::start(NODE, &[]).unwrap();
    let cs = node.connection_string("");

    // A large binary value through stdin comes back byte for byte.
    let big: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let (code, _, err) = gridctl(&cs, &["put", "ns", "big"], Some(&big));
    assert_eq!(code, 0, "{err}");
    let (code, out, _) = gridctl(&cs, &["get", "ns", "big"], None);
    assert_eq!((code, out == big), (0, true));

    // A value on the command line, with a sliding timeout.
    let (code, out, err) = gridctl(
        &cs,
        &["put", "ns", "small", "hello", "--ttl", "20m", "--sliding"],
        None,
    );
    assert_eq!(code, 0, "{err}");
    assert!(String::from_utf8(out).unwrap().starts_with("version "));
    assert_eq!(gridctl(&cs, &["get", "ns", "small"], None).1, b"hello");

    // Missing: "not found" on stderr, exit 1, nothing on stdout.
    let (code, out, err) = gridctl(&cs, &["get", "ns", "nope"], None);
    assert_eq!((code, out.is_empty(), err.trim()), (1, true, "not found"));
    assert_eq!(gridctl(&cs, &["remove", "ns", "nope"], None).0, 1);

    // Locks: the id on stdout; a second lock exits 1 naming the holder; unlock works.
    let (code, out, _) = gridctl(&cs, &["lock", "ns", "small"], None);
    assert_eq!(code, 0);
    let lock_id = String::from_utf8(out).unwrap().trim().to_string();
    let (code, _, err) = gridctl(&cs, &["lock", "ns", "small"], None);
    assert_eq!(code, 1);
    assert!(err.contains(&format!("lock id {lock_id}")), "{err}");
    let (code, _, err) = gridctl(&cs, &["put", "ns", "small", "x"], None);
    assert_eq!(code, 2, "writing a locked object is an error");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_eq!(
        gridctl(&cs, &["unlock", "ns", "small", &lock_id], None).0,
        0
    );
    assert_eq!(gridctl(&cs, &["remove", "ns", "small"], None).0, 0);

    // Tags: put --tag (repeatable), find --tag (one key per line; none: exit 1),
    // remove --tag (prints the count).
    for (key, tags) in [
        ("u1", &["user:7", "web"][..]),
        ("u2", &["user:7"]),
        ("u3", &["web"]),
    ] {
        let mut args = vec!["put", "ns", key, "v"];
        for tag in tags {
            args.extend(["--tag", tag]);
        }
        let (code, _, err) = gridctl(&cs, &args, None);
        assert_eq!(code, 0, "{err}");
    }
    let (code, out, _) = gridctl(&cs, &["find", "ns", "--tag", "user:7"], None);
    assert_eq!(
        (code, String::from_utf8(out).unwrap()),
        (0, "u1\nu2\n".into())
    );
    let (code, out, err) = gridctl(&cs, &["find", "ns", "--tag", "nobody"], None);
    assert_eq!((code, out.is_empty()), (1, true), "{err}");
    assert!(err.contains("nobody"), "{err}");
    let (code, _, err) = gridctl(
        &cs,
        &["put", "ns", "u4", "v", "--tag", &"t".repeat(65)],
        None,
    );
    assert_eq!(code, 2);
    assert!(err.contains("65 bytes; the limit is 64"), "{err}");
    let (code, out, _) = gridctl(&cs, &["remove", "ns", "--tag", "user:7"], None);
    assert_eq!((code, String::from_utf8(out).unwrap()), (0, "2\n".into()));
    assert_eq!(gridctl(&cs, &["get", "ns", "u1"], None).0, 1);
    assert_eq!(
        gridctl(&cs, &["find", "ns", "--tag", "web"], None).1,
        b"u3\n"
    );

    // Status shows the cluster.
    let (code, out, _) = gridctl(&cs, &["status"], None);
    let out = String::from_utf8(out).unwrap();
    assert_eq!(code, 0);
    assert!(
        out.contains("map epoch") && out.contains(&node.client_addr().to_string()),
        "{out}"
    );

    // Errors exit 2 with one line: a bad connection string, an unreachable node.
    for bad in [
        "bootstrapGateways=127.0.0.1:1;colour=blue",
        "bootstrapGateways=127.0.0.1:1;connectTimeout=1s",
    ] {
        let (code, _, err) = gridctl(bad, &["get", "ns", "big"], None);
        assert_eq!(code, 2, "{bad}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.starts_with("gridctl: "), "{err}");
    }
}

/// The admin endpoint's answer to `GET path`, body only.
fn admin_get(addr: std::net::SocketAddr, path: &str) -> String {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(DEADLINE)).unwrap();
    write!(
        conn,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    answer.split_once("\r\n\r\n").unwrap().1.to_string()
}

#[test]
fn status_workers_names_every_job_with_its_rounds_and_last_error() {
    // A remote store nobody serves, so the geo prober has an error to show.
    let node = NodeProcess::start(
        NODE,
        &[
            "--admin",
            "127.0.0.1:0",
            "--site",
            "here",
            "--geo-listen",
            "127.0.0.1:0",
            "--remote-store",
            "far=127.0.0.1:1",
            "--geo-timeout",
            "1s",
        ],
    )
    .unwrap();
    let cs = node.connection_string("");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let out = loop {
        let (code, out, err) = gridctl(&cs, &["status", "--workers"], None);
        assert_eq!(code, 0, "{err}");
        let out = String::from_utf8(out).unwrap();
        let line = |name: &str| {
            out.lines()
                .find(|l| l.split_whitespace().next() == Some(name))
                .map(str::to_string)
        };
        let ran = |name: &str| {
            line(name)
                .and_then(|l| l.split_whitespace().nth(2).map(str::to_string))
                .is_some_and(|runs| runs.parse::<u64>().unwrap() > 0)
        };
        let probed = line("geo-probe").is_some_and(|l| l.contains("remote store far"));
        if ran("reconcile") && ran("liveness") && ran("housekeeping") && probed {
            break out;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "jobs never ran:\n{out}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(out.contains("workers:"), "{out}");
    for serving in ["accept", "admin", "geo-serve"] {
        let line = out
            .lines()
            .find(|l| l.split_whitespace().next() == Some(serving))
            .unwrap_or_else(|| panic!("no {serving} in\n{out}"));
        assert_eq!(line.split_whitespace().nth(1), Some("serving"), "{line}");
    }
    // Without --workers, no job lines.
    let (_, plain, _) = gridctl(&cs, &["status"], None);
    assert!(!String::from_utf8(plain).unwrap().contains("workers:"));

    // The admin endpoint has the same, as JSON.
    let body = admin_get(node.admin_addr().unwrap(), "/workers");
    let jobs: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
    let names: Vec<&str> = jobs.iter().filter_map(|j| j["name"].as_str()).collect();
    for name in [
        "accept",
        "admin",
        "geo-probe",
        "geo-resolve",
        "geo-serve",
        "housekeeping",
        "liveness",
        "reconcile",
        "successor",
    ] {
        assert!(names.contains(&name), "{name} missing from {body}");
    }
    let probe = jobs.iter().find(|j| j["name"] == "geo-probe").unwrap();
    assert!(probe["failures"].as_u64().unwrap() > 0, "{probe}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gridctl_events_prints_one_line_per_event() {
    use std::io::BufRead;
    use std::process::Stdio;

    let node = NodeProcess::start(NODE, &[]).unwrap();
    let cs = node.connection_string("");
    let mut events = Command::new(GRIDCTL)
        .args(["events", "ev"])
        .env("GRID_CONNECTION", &cs)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = events.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let client = grid_client::GridClient::connect(&cs).await.unwrap();
    let addr = node.client_addr().to_string();
    grid_tests::wait_until("gridctl registered", DEADLINE, || async {
        let s = client.node_status(&addr).await.ok()?;
        (s.event_subscribers > 0).then_some(())
    })
    .await
    .unwrap();
    let (code, _, err) = gridctl(&cs, &["put", "ev", "k1", "hello", "--ttl", "200ms"], None);
    assert_eq!(code, 0, "{err}");
    let line = rx.recv_timeout(DEADLINE).unwrap().unwrap();
    let _ = events.kill();
    let _ = events.wait();
    assert_eq!(line, "expired k1 5");
}
