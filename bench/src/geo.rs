//! Geo replication on loopback: two sites (east and west), each a 3-node cluster (R = 3),
//! linked over QUIC.
//! - **pull**: west reads a 4 KB object only east has (`get_remote`, remote store east):
//!   one QUIC round trip to export it, a replicated import at west, the commit to east,
//!   then the read at west. Each pull moves a different object.
//! - **local read**: the same read of an object west already holds, for comparison.
//! - **QUIC vs TCP**: a ping round trip to the same east node over its geo endpoint
//!   (QUIC, TLS 1.3) and over its client port (TCP, the grid protocol).

use std::time::{Duration, Instant};

use geo_replication::{GeoLink, GeoRequest, GeoTls, TlsFiles};
use grid_client::{GridClient, RemoteRead, Timeout};
use hdrhistogram::Histogram;

use crate::nodes::{connection_string, start_cluster_each, BenchNode};

const VALUE_BYTES: usize = 4096;

fn udp_ports(n: usize) -> anyhow::Result<Vec<String>> {
    let sockets = (0..n)
        .map(|_| std::net::UdpSocket::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(sockets
        .iter()
        .map(|s| s.local_addr().map(|a| a.to_string()))
        .collect::<Result<_, _>>()?)
}

async fn site(
    name: &str,
    own: &[String],
    other: &str,
    theirs: &[String],
) -> anyhow::Result<Vec<BenchNode>> {
    let per_node = own
        .iter()
        .map(|addr| {
            vec![
                "--partitions".into(),
                "64".into(),
                "--site".into(),
                name.into(),
                "--geo-listen".into(),
                addr.clone(),
                "--remote-store".into(),
                format!("{other}={}", theirs.join(",")),
            ]
        })
        .collect();
    start_cluster_each(per_node).await
}

fn histogram() -> anyhow::Result<Histogram<u64>> {
    Ok(Histogram::new_with_bounds(1, 60_000_000, 3)?)
}

fn row(name: &str, h: &Histogram<u64>) {
    println!(
        "| {name} | {} | {} | {} | {} |",
        h.len(),
        h.value_at_quantile(0.5),
        h.value_at_quantile(0.99),
        h.max()
    );
}

/// Runs the measurements with `n` operations each, printed as markdown.
pub async fn run(n: u64) -> anyhow::Result<()> {
    let (east_geo, west_geo) = (udp_ports(3)?, udp_ports(3)?);
    let east = site("east", &east_geo, "west", &west_geo).await?;
    let west = site("west", &west_geo, "east", &east_geo).await?;
    let plain = ";maxPoolSize=1;clientCacheType=None";
    let east_client = GridClient::connect(&format!("{}{plain}", connection_string(&east))).await?;
    let west_client = GridClient::connect(&format!("{}{plain}", connection_string(&west))).await?;
    let value = vec![0x5a_u8; VALUE_BYTES];
    let stores = vec!["east".to_string()];
    for i in 0..n {
        east_client
            .put("bench", format!("e{i}"), value.clone(), Timeout::None)
            .await?;
        west_client
            .put("bench", format!("w{i}"), value.clone(), Timeout::None)
            .await?;
    }
    let (mut pull, mut local) = (histogram()?, histogram()?);
    for i in 0..n {
        let started = Instant::now();
        match west_client
            .get_remote("bench", format!("e{i}"), &stores)
            .await?
        {
            RemoteRead::Found(o) if o.value.len() == VALUE_BYTES => {}
            other => anyhow::bail!("pull of e{i}: {other:?}"),
        }
        pull.record(started.elapsed().as_micros() as u64)?;
        let started = Instant::now();
        west_client
            .get("bench", format!("w{i}"))
            .await?
            .ok_or_else(|| anyhow::anyhow!("w{i} missing"))?;
        local.record(started.elapsed().as_micros() as u64)?;
    }
    // One east node, over QUIC and over TCP.
    let link = GeoLink::bind(
        "127.0.0.1:0".parse()?,
        GeoTls::new(&TlsFiles::default())?,
        None,
        "bench".into(),
    )?;
    let (mut quic, mut tcp) = (histogram()?, histogram()?);
    let tcp_client =
        GridClient::connect(&format!("bootstrapGateways={}{plain}", east[0].addr)).await?;
    let timeout = Duration::from_secs(5);
    link.request(&east_geo[0], GeoRequest::Ping, timeout)
        .await?; // connection set-up
    tcp_client.node_status(&east[0].addr).await?;
    for _ in 0..n {
        let started = Instant::now();
        link.request(&east_geo[0], GeoRequest::Ping, timeout)
            .await?;
        quic.record(started.elapsed().as_micros() as u64)?;
        let started = Instant::now();
        tcp_client.ping().await?;
        tcp.record(started.elapsed().as_micros() as u64)?;
    }
    println!("| operation | count | p50 µs | p99 µs | max µs |");
    println!("|---|---:|---:|---:|---:|");
    row("local read at west (4 KB)", &local);
    row("pull-on-miss east → west (4 KB, migrates)", &pull);
    row("ping over QUIC (geo link, TLS 1.3)", &quic);
    row("ping over TCP (client port)", &tcp);
    Ok(())
}
