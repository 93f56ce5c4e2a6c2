use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use grid_proto::{GeoOp, ObjKey};
use tokio_util::sync::CancellationToken;

use super::{GeoError, GeoHandler, GeoLink};
use crate::tls::{GeoTls, TlsFiles};
use crate::wire::{GeoRequest, GeoResponse, StepAnswer};

/// Answers pings with its site and steps with `NotFound`.
struct Echo(String);

impl GeoHandler for Echo {
    fn handle(
        &self,
        _from: String,
        request: GeoRequest,
    ) -> Pin<Box<dyn Future<Output = GeoResponse> + Send + '_>> {
        Box::pin(async move {
            match request {
                GeoRequest::Ping => GeoResponse::Pong {
                    site: self.0.clone(),
                },
                GeoRequest::Step(_) => GeoResponse::Step(StepAnswer::NotFound),
            }
        })
    }
}

fn link(site: &str, token: Option<&str>) -> Arc<GeoLink> {
    let tls = GeoTls::new(&TlsFiles::default()).unwrap();
    Arc::new(
        GeoLink::bind(
            "127.0.0.1:0".parse().unwrap(),
            tls,
            token.map(str::to_string),
            site.into(),
        )
        .unwrap(),
    )
}

fn serve(link: &Arc<GeoLink>, stop: &CancellationToken) -> tokio::task::JoinHandle<()> {
    let site = link.site().to_string();
    tokio::spawn(Arc::clone(link).serve(Arc::new(Echo(site)), stop.clone()))
}

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test]
async fn sites_talk_over_quic_with_a_shared_token() {
    let stop = CancellationToken::new();
    let east = link("east", Some("s3cret"));
    let west = link("west", Some("s3cret"));
    let served = serve(&east, &stop);
    let east_addr = east.local_addr().unwrap().to_string();
    let pong = west
        .request(&east_addr, GeoRequest::Ping, WAIT)
        .await
        .unwrap();
    assert_eq!(
        pong,
        GeoResponse::Pong {
            site: "east".into()
        }
    );
    let step = GeoRequest::Step(GeoOp::Resolve {
        obj: ObjKey::new("s", "k"),
        transfer: 1,
    });
    assert_eq!(
        west.request(&east_addr, step, WAIT).await.unwrap(),
        GeoResponse::Step(StepAnswer::NotFound)
    );
    // A node with another token is refused, and says so.
    let stranger = link("north", Some("guess"));
    let refused = stranger.request(&east_addr, GeoRequest::Ping, WAIT).await;
    assert!(
        matches!(&refused, Err(GeoError::Refused { reason, .. }) if reason.contains("token")),
        "{refused:?}"
    );
    stop.cancel();
    served.await.unwrap();
}

#[tokio::test]
async fn a_wrong_token_is_refused_before_the_request_is_read() {
    use crate::wire::{decode, encode_request, StreamHeader, GEO_VERSION};
    let stop = CancellationToken::new();
    let east = link("east", Some("s3cret"));
    let served = serve(&east, &stop);
    let attacker = link("mallory", Some("guess"));
    let conn = attacker
        .connection(east.local_addr().unwrap())
        .await
        .unwrap();
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let header = StreamHeader {
        version: GEO_VERSION,
        token: Some("guess".into()),
        from_site: "mallory".into(),
    };
    let mut message = encode_request(&header, &GeoRequest::Ping);
    message.truncate(message.len() - 1);
    send.write_all(&message).await.unwrap();
    // The body goes on (a megabyte of it) and never ends: the answer comes anyway.
    send.write_all(&vec![0u8; 1 << 20]).await.unwrap();
    let answer = tokio::time::timeout(WAIT, recv.read_to_end(4096))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        decode::<GeoResponse>(&answer).unwrap(),
        GeoResponse::Refused {
            reason: "wrong geo token".into()
        }
    );
    // An oversized header is refused from its length.
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(&u16::MAX.to_le_bytes()).await.unwrap();
    let answer = tokio::time::timeout(WAIT, recv.read_to_end(4096))
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(
        decode::<GeoResponse>(&answer).unwrap(),
        GeoResponse::Refused { reason } if reason.contains("limit")
    ));
    stop.cancel();
    served.await.unwrap();
}

#[tokio::test]
async fn a_silent_peer_costs_the_timeout_and_no_more() {
    // A UDP socket that never answers QUIC.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap().to_string();
    let west = link("west", None);
    let started = std::time::Instant::now();
    let err = west
        .request(&addr, GeoRequest::Ping, Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(matches!(err, GeoError::Timeout { .. }), "{err}");
    assert!(started.elapsed() < WAIT, "bounded by the timeout");
}

#[test]
fn beyond_loopback_needs_a_token_and_verified_certificates() {
    let tls = GeoTls::new(&TlsFiles::default()).unwrap();
    let err = GeoLink::bind("0.0.0.0:0".parse().unwrap(), tls.clone(), None, "e".into())
        .unwrap_err()
        .to_string();
    assert!(err.contains("--geo-token"), "{err}");
    assert!(tls.check_peer("10.1.2.3:7300".parse().unwrap()).is_err());
    assert!(tls.check_peer("127.0.0.1:7300".parse().unwrap()).is_ok());
}
