//! The floor: a raw TCP ping-pong on 127.0.0.1 with the same payload, one client, no
//! protocol, against an echo server in another process (as every backend is). Every
//! latency in the report is this plus the backend's overhead.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::load::{self, LoadResult};

/// Serves echo on an ephemeral loopback port, printing `echo <addr>` once ready; runs
/// until killed. This is `grid-bench echo`.
pub async fn serve_echo(payload: usize) -> anyhow::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    println!("echo {}", listener.local_addr()?);
    let (mut stream, _) = listener.accept().await?;
    stream.set_nodelay(true)?;
    let mut buf = vec![0u8; payload];
    while stream.read_exact(&mut buf).await.is_ok() {
        stream.write_all(&buf).await?;
    }
    Ok(())
}

/// Round trips of `payload` bytes each way over one loopback connection to an echo
/// server in a child process.
pub async fn ping_pong(
    payload: usize,
    warmup: Duration,
    duration: Duration,
) -> anyhow::Result<LoadResult> {
    let mut child = Command::new(std::env::current_exe()?)
        .args(["echo", "--payload", &payload.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let result = async {
        let stdout = child.stdout.take().context("no stdout")?;
        let line = tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            BufReader::new(stdout).read_line(&mut line).map(|_| line)
        })
        .await??;
        let addr = line
            .trim()
            .strip_prefix("echo ")
            .context("echo server printed no address")?
            .to_string();
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let stream = std::sync::Arc::new(tokio::sync::Mutex::new(stream));
        anyhow::Ok(
            load::run(1, warmup, duration, move |_, _| {
                let stream = std::sync::Arc::clone(&stream);
                async move {
                    let mut stream = stream.lock().await;
                    let mut buf = vec![0x5a_u8; payload];
                    stream.write_all(&buf).await?;
                    stream.read_exact(&mut buf).await?;
                    Ok(())
                }
            })
            .await,
        )
    }
    .await;
    let _ = child.kill();
    let _ = child.wait();
    result
}
