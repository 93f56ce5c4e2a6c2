//! `gridctl` whose reader goes away early (`gridctl status | head -1`) ends quietly: exit
//! status 0, no panic, no backtrace.
#![allow(clippy::unwrap_used)] // reason: integration tests; a panic is a failed test

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use grid_tests::process::NodeProcess;

const NODE: &str = env!("CARGO_BIN_EXE_test-node");
const GRIDCTL: &str = env!("CARGO_BIN_EXE_test-gridctl");
const DEADLINE: Duration = Duration::from_secs(30);

/// Runs gridctl with `args` and closes its stdout pipe at once (before it has written
/// anything, as `head` may have exited by then); returns its exit code and stderr.
fn reader_gone(cs: &str, args: &[&str]) -> (Option<i32>, String) {
    let mut child = Command::new(GRIDCTL)
        .args(args)
        .env("GRID_CONNECTION", cs)
        .env("RUST_BACKTRACE", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > DEADLINE {
            let _ = child.kill();
            panic!("gridctl {args:?} still running after its reader left");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    let _ = std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err);
    (status.code(), err)
}

#[test]
fn gridctl_exits_quietly_when_its_reader_goes_away() {
    let node = NodeProcess::start(NODE, &[]).unwrap();
    let cs = node.connection_string("");
    // A value larger than any pipe buffer.
    let mut put = Command::new(GRIDCTL)
        .args(["put", "ns", "big"])
        .env("GRID_CONNECTION", &cs)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    put.stdin
        .take()
        .unwrap()
        .write_all(&vec![b'x'; 1 << 20])
        .unwrap();
    assert!(put.wait().unwrap().success());
    for args in [
        &["status"][..],
        &["get", "ns", "big"],
        &["lock", "ns", "big"],
    ] {
        let (code, err) = reader_gone(&cs, args);
        assert_eq!(code, Some(0), "gridctl {args:?}: {err}");
        assert!(
            !err.contains("panicked") && !err.contains("backtrace"),
            "gridctl {args:?}: {err}"
        );
    }
}
