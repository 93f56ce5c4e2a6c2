//! The compression of session items: LZ4 (`lz4_flex`, what the provider uses) against
//! Snappy (`snap`) and deflate (`miniz_oxide`, levels 1 and 6), on session-like JSON: a
//! 3 KB profile, a 64 KB cart and the 256 KB session of `large-session`. Each cell is the
//! median of 5 timed runs of at least 300 ms; every output is checked against its input.

use std::time::{Duration, Instant};

use serde_json::json;

/// One codec: compress, decompress (given the original length).
struct Codec {
    name: &'static str,
    compress: fn(&[u8]) -> Vec<u8>,
    decompress: fn(&[u8], usize) -> Vec<u8>,
}

fn lz4(data: &[u8]) -> Vec<u8> {
    lz4_flex::block::compress(data)
}

fn unlz4(data: &[u8], len: usize) -> Vec<u8> {
    lz4_flex::block::decompress(data, len).unwrap_or_default()
}

fn snappy(data: &[u8]) -> Vec<u8> {
    snap::raw::Encoder::new()
        .compress_vec(data)
        .unwrap_or_default()
}

fn unsnappy(data: &[u8], _: usize) -> Vec<u8> {
    snap::raw::Decoder::new()
        .decompress_vec(data)
        .unwrap_or_default()
}

fn deflate1(data: &[u8]) -> Vec<u8> {
    miniz_oxide::deflate::compress_to_vec(data, 1)
}

fn deflate6(data: &[u8]) -> Vec<u8> {
    miniz_oxide::deflate::compress_to_vec(data, 6)
}

fn inflate(data: &[u8], _: usize) -> Vec<u8> {
    miniz_oxide::inflate::decompress_to_vec(data).unwrap_or_default()
}

const CODECS: [Codec; 4] = [
    Codec {
        name: "lz4_flex (block)",
        compress: lz4,
        decompress: unlz4,
    },
    Codec {
        name: "snap (raw)",
        compress: snappy,
        decompress: unsnappy,
    },
    Codec {
        name: "miniz_oxide deflate 1",
        compress: deflate1,
        decompress: inflate,
    },
    Codec {
        name: "miniz_oxide deflate 6",
        compress: deflate6,
        decompress: inflate,
    },
];

/// A 3 KB user profile: preferences, a CSRF token (random hex), recent pages.
fn profile() -> Vec<u8> {
    let pages: Vec<String> = (0..110)
        .map(|i| format!("/catalog/shirts/page-{i}"))
        .collect();
    let token: String = (0..64u64)
        .map(|i| format!("{:x}", (i * 2_654_435_761) % 16))
        .collect();
    let value = json!({
        "user": {"id": 48213, "name": "Ann Example", "email": "ann@example.org",
                 "locale": "en-GB", "currency": "EUR", "theme": "dark"},
        "csrf": token,
        "recent": pages,
        "flags": {"beta": true, "newsletter": false, "consent": ["analytics", "ads"]},
    });
    serde_json::to_vec(&value).unwrap_or_default()
}

/// MB/s of `op` over `bytes` per call: the median of 5 runs of at least 300 ms.
fn rate(bytes: usize, mut op: impl FnMut()) -> f64 {
    let mut runs = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        let mut calls = 0u64;
        while started.elapsed() < Duration::from_millis(300) {
            op();
            calls += 1;
        }
        let secs = started.elapsed().as_secs_f64();
        runs.push(calls as f64 * bytes as f64 / secs / 1e6);
    }
    crate::load::median(runs)
}

/// The table, as markdown.
pub fn run() -> anyhow::Result<String> {
    let session = crate::large_session::session(1);
    let items = session.to_json();
    // 64 KB: four of the session's carts as one.
    let products: Vec<&serde_json::Value> = (0..4)
        .filter_map(|i| items.get(&format!("cart{i}"))?.as_array())
        .flatten()
        .collect();
    let cart = serde_json::to_vec(&products)?;
    let inputs = [
        ("profile", profile()),
        ("cart", cart),
        ("256 KB session", serde_json::to_vec(&items)?),
    ];
    let mut out = String::from(
        "| input | bytes | codec | ratio | compress MB/s | decompress MB/s |\n|---|---:|---|---:|---:|---:|\n",
    );
    for (name, data) in &inputs {
        for codec in &CODECS {
            let packed = (codec.compress)(data);
            anyhow::ensure!(
                (codec.decompress)(&packed, data.len()) == *data,
                "{} does not give back its input",
                codec.name
            );
            let compress = rate(data.len(), || {
                std::hint::black_box((codec.compress)(std::hint::black_box(data)));
            });
            let decompress = rate(data.len(), || {
                std::hint::black_box((codec.decompress)(
                    std::hint::black_box(&packed),
                    data.len(),
                ));
            });
            out.push_str(&format!(
                "| {name} | {} | {} | {:.2} | {compress:.0} | {decompress:.0} |\n",
                data.len(),
                codec.name,
                packed.len() as f64 / data.len() as f64,
            ));
        }
    }
    Ok(out)
}
