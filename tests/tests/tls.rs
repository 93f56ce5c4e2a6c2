//! TLS on the client port: clients with `useSecure=true`, mutual TLS, nodes reaching
//! each other over TLS with the cluster secret, and clear errors for a client at the
//! wrong kind of port. Certificates are made by the test.
#![allow(clippy::unwrap_used)] // reason: integration tests; a panic is a failed test

use grid_client::{ClientError, GridClient, Timeout};
use grid_tests::certs::TestCa;
use grid_tests::process::NodeProcess;
use grid_tests::{wait_until, DEADLINE};

const BIN: &str = env!("CARGO_BIN_EXE_test-node");
const SECRET: &str = "tls-cluster-secret-0";

fn path(p: &std::path::Path) -> String {
    p.display().to_string()
}

async fn connect(cs: &str) -> Result<GridClient, ClientError> {
    GridClient::connect(cs).await
}

#[tokio::test]
async fn clients_and_peers_speak_tls_to_the_client_port() {
    let ca = TestCa::new("tls").unwrap();
    let node_id = ca.issue("node", &["127.0.0.1", "localhost"]).unwrap();
    let (cert, key) = (path(&node_id.cert), path(&node_id.key));
    let tls_args = [
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
        "--tls-ca",
        &path(&ca.ca_file()),
    ];
    let mut args = vec!["--cluster-secret", SECRET];
    args.extend_from_slice(&tls_args);
    let first = NodeProcess::start(BIN, &args).unwrap();
    let join = first.client_addr().to_string();
    let mut joining = args.clone();
    joining.extend_from_slice(&["--join", &join]);
    let second = NodeProcess::start(BIN, &joining).unwrap();

    let secure = format!(
        "bootstrapGateways={},{};useSecure=true;tlsCaFile={}",
        first.client_addr(),
        second.client_addr(),
        path(&ca.ca_file())
    );
    let client = connect(&secure).await.unwrap();
    // The second node joined over TLS, proving the cluster secret.
    wait_until("both nodes active in the map", DEADLINE * 2, || async {
        client.refresh().await.ok()?;
        let map = client.partition_map()?;
        (map.nodes.iter().filter(|n| n.active).count() == 2).then_some(())
    })
    .await
    .unwrap();
    for i in 0..20 {
        client
            .put("ns", format!("k{i}"), format!("v{i}"), Timeout::None)
            .await
            .unwrap();
    }
    for i in 0..20 {
        let got = client.get("ns", format!("k{i}")).await.unwrap().unwrap();
        assert_eq!(got.value, format!("v{i}").as_bytes());
    }

    // A plaintext client at the TLS port is told what to do.
    let plain = format!("bootstrapGateways={}", first.client_addr());
    let err = connect(&plain).await.unwrap_err().to_string();
    assert!(
        err.contains("requires TLS") && err.contains("useSecure=true"),
        "{err}"
    );

    // A client trusting another CA refuses the node.
    let other = TestCa::new("tls-other").unwrap();
    let wrong = format!(
        "bootstrapGateways={};useSecure=true;tlsCaFile={}",
        first.client_addr(),
        path(&other.ca_file())
    );
    let err = connect(&wrong).await.unwrap_err().to_string();
    assert!(err.contains("TLS handshake failed"), "{err}");

    // A name the certificate does not carry.
    let misnamed = format!("{secure};tlsServerName=grid.example");
    let err = connect(&misnamed).await.unwrap_err().to_string();
    assert!(err.contains("TLS handshake failed"), "{err}");

    // The node kept serving.
    assert_eq!(client.get("ns", "k0").await.unwrap().unwrap().value, b"v0");
}

#[tokio::test]
async fn a_tls_client_at_a_plaintext_port_gets_a_clear_error() {
    let ca = TestCa::new("tls-plain").unwrap();
    let node = NodeProcess::start(BIN, &[]).unwrap();
    let cs = format!(
        "bootstrapGateways={};useSecure=true;tlsCaFile={}",
        node.client_addr(),
        path(&ca.ca_file())
    );
    let err = connect(&cs).await.unwrap_err().to_string();
    assert!(
        err.contains("TLS handshake failed") && err.contains("--tls-cert"),
        "{err}"
    );
    // Missing settings are named.
    let err = connect(&format!(
        "bootstrapGateways={};useSecure=true",
        node.client_addr()
    ))
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains("tlsCaFile"), "{err}");
    let plain = GridClient::connect(&node.connection_string(""))
        .await
        .unwrap();
    plain.put("ns", "k", "v", Timeout::None).await.unwrap();
}

#[tokio::test]
async fn mutual_tls_requires_a_client_certificate() {
    let ca = TestCa::new("mtls").unwrap();
    let node_id = ca.issue("node", &["127.0.0.1"]).unwrap();
    let app = ca.issue("app", &["app.example"]).unwrap();
    let stranger_ca = TestCa::new("mtls-stranger").unwrap();
    let stranger = stranger_ca.issue("stranger", &["app.example"]).unwrap();
    let node = NodeProcess::start(
        BIN,
        &[
            "--tls-cert",
            &path(&node_id.cert),
            "--tls-key",
            &path(&node_id.key),
            "--tls-client-ca",
            &path(&ca.ca_file()),
        ],
    )
    .unwrap();
    let base = format!(
        "bootstrapGateways={};useSecure=true;tlsCaFile={}",
        node.client_addr(),
        path(&ca.ca_file())
    );
    // No client certificate, or one from another CA: refused.
    assert!(connect(&base).await.is_err());
    let foreign = format!(
        "{base};tlsCertFile={};tlsKeyFile={}",
        path(&stranger.cert),
        path(&stranger.key)
    );
    assert!(connect(&foreign).await.is_err());
    // The CA's client certificate: admitted.
    let admitted = format!(
        "{base};tlsCertFile={};tlsKeyFile={}",
        path(&app.cert),
        path(&app.key)
    );
    let client = connect(&admitted).await.unwrap();
    client.put("ns", "k", "v", Timeout::None).await.unwrap();
    assert_eq!(client.get("ns", "k").await.unwrap().unwrap().value, b"v");
}
