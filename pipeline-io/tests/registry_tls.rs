//! The registry client against an `https` registry whose certificate a private CA signed: with
//! the CA from `schema_registry.ca_location` it fetches schemas; without it the request fails
//! as unavailable, naming the certificate. A bad `ca_location` is a config error naming the key.
//!
//! The registry is a TLS listener on 127.0.0.1 answering every request with one schema; its
//! certificate and the CA's are test fixtures (`tests/fixtures/registry-*.pem`, valid until
//! 2126, for 127.0.0.1 and localhost only).

use std::time::Duration;

use pipeline_io::config::{Errors, RegistryFile};
use pipeline_io::registry::RegistryError;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

/// Starts a TLS listener that answers every request with the schema of id 1; its base URL.
async fn tls_registry() -> String {
    let cert = std::fs::read(format!("{FIXTURES}/registry-server.pem")).unwrap();
    let key = std::fs::read(format!("{FIXTURES}/registry-server.key")).unwrap();
    let identity = native_tls::Identity::from_pkcs8(&cert, &key).unwrap();
    let acceptor = tokio_native_tls::TlsAcceptor::from(
        native_tls::TlsAcceptor::builder(identity).build().unwrap(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                // A client that refuses the certificate ends the handshake: nothing to answer.
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let body = r#"{"schema":"{\"type\":\"record\",\"name\":\"T\",\"fields\":[{\"name\":\"a\",\"type\":\"long\"}]}"}"#;
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(response.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    format!("https://127.0.0.1:{port}")
}

fn settings(
    url: &str,
    ca_location: Option<String>,
) -> Result<pipeline_io::config::RegistrySettings, String> {
    let file = RegistryFile {
        url: url.to_owned(),
        ca_location,
        request_timeout_ms: 5_000,
        ..RegistryFile::default()
    };
    let mut errors = Errors::default();
    let settings = file.validate(&|_| None, &mut errors);
    errors.finish(|| settings).map_err(|e| e.to_string())
}

#[tokio::test]
async fn a_private_ca_from_ca_location_is_trusted() {
    let url = tls_registry().await;
    let registry = settings(&url, Some(format!("{FIXTURES}/registry-ca.pem")))
        .unwrap()
        .client()
        .unwrap();
    let schema = registry.schema_by_id(1).await.unwrap();
    assert!(
        matches!(&*schema, apache_avro::Schema::Record(r) if r.name.name() == "T"),
        "{schema:?}"
    );
}

#[tokio::test]
async fn without_the_ca_the_certificate_is_refused() {
    let url = tls_registry().await;
    let registry = settings(&url, None).unwrap().client().unwrap();
    let err = tokio::time::timeout(Duration::from_secs(20), registry.schema_by_id(1))
        .await
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, RegistryError::Unavailable { .. }), "{err}");
    assert!(
        err.to_string().to_lowercase().contains("certificate"),
        "the error should name the certificate: {err}"
    );
}

#[test]
fn a_missing_or_non_pem_ca_location_is_a_config_error() {
    let missing = settings("https://r.example", Some("/nonexistent/ca.pem".into())).unwrap_err();
    assert!(missing.contains("schema_registry.ca_location"), "{missing}");
    assert!(missing.contains("/nonexistent/ca.pem"), "{missing}");

    let not_pem = format!("{FIXTURES}/registry-server.key");
    let err = settings("https://r.example", Some(not_pem.clone())).unwrap_err();
    assert!(err.contains("schema_registry.ca_location"), "{err}");
    assert!(
        err.contains("no PEM certificate") || err.contains("not a PEM"),
        "{err}"
    );
}
