//! Laptop path: when `KAFKA_BOOTSTRAP_SERVERS` and `SCHEMA_REGISTRY_URL` are unset and a Docker
//! engine answers, start an `apache/kafka` broker and an Apicurio Registry with testcontainers,
//! once per test process.
//!
//! The probe is a plain `GET /_ping` with a 2 s limit, so a machine with a Docker client but no
//! engine falls through to the "run deploy/local/up" message at once instead of hanging.
//! The containers live as long as the test process (a dedicated thread owns them).

use std::io::{Read, Write};
use std::sync::mpsc;
use std::time::Duration;

use testcontainers_modules::kafka::apache::{KAFKA_PORT, Kafka};
use testcontainers_modules::testcontainers::core::{IntoContainerPort, WaitFor};
use testcontainers_modules::testcontainers::runners::AsyncRunner;
use testcontainers_modules::testcontainers::{GenericImage, ImageExt};

use crate::{Infra, InfraSource};

/// Apicurio Registry image and tag used on the Docker path (same line as deploy/local/up).
const REGISTRY_IMAGE: &str = "apicurio/apicurio-registry";
const REGISTRY_TAG: &str = "3.3.3";
const REGISTRY_PORT: u16 = 8080;
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
const START_TIMEOUT: Duration = Duration::from_secs(300);

/// True when a Docker engine answers `GET /_ping` on `DOCKER_HOST` (unix or tcp) or on
/// `/var/run/docker.sock`, within [`PROBE_TIMEOUT`].
pub(crate) fn engine_answers() -> bool {
    let host = std::env::var("DOCKER_HOST").unwrap_or_default();
    let request = b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n";
    if let Some(address) = host.strip_prefix("tcp://") {
        let Ok(mut addresses) = std::net::ToSocketAddrs::to_socket_addrs(address) else {
            return false;
        };
        let Some(address) = addresses.next() else {
            return false;
        };
        match std::net::TcpStream::connect_timeout(&address, PROBE_TIMEOUT) {
            Ok(stream) => ping(stream, request),
            Err(_) => false,
        }
    } else {
        #[cfg(unix)]
        {
            let path = host
                .strip_prefix("unix://")
                .unwrap_or("/var/run/docker.sock");
            match std::os::unix::net::UnixStream::connect(path) {
                Ok(stream) => {
                    let _ = stream.set_read_timeout(Some(PROBE_TIMEOUT));
                    let _ = stream.set_write_timeout(Some(PROBE_TIMEOUT));
                    ping(stream, request)
                }
                Err(_) => false,
            }
        }
        #[cfg(not(unix))]
        {
            false
        }
    }
}

fn ping<S: Read + Write>(mut stream: S, request: &[u8]) -> bool {
    if stream.write_all(request).is_err() {
        return false;
    }
    let mut answer = [0_u8; 64];
    match stream.read(&mut answer) {
        Ok(read) => std::str::from_utf8(&answer[..read]).is_ok_and(|text| text.contains(" 200 ")),
        Err(_) => false,
    }
}

/// Starts the broker and the registry on a dedicated thread that keeps them for the life of
/// the process, and returns their addresses.
pub(crate) fn start() -> Result<Infra, String> {
    let (sender, receiver) = mpsc::sync_channel::<Result<Infra, String>>(1);
    std::thread::Builder::new()
        .name("test-harness-containers".to_owned())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(error) => {
                    let _ = sender.send(Err(format!("tokio runtime: {error}")));
                    return;
                }
            };
            runtime.block_on(async move {
                match start_containers().await {
                    Ok((infra, kafka, registry)) => {
                        let _ = sender.send(Ok(infra));
                        // Own the containers until the process ends.
                        let _keep = (kafka, registry);
                        std::future::pending::<()>().await;
                    }
                    Err(error) => {
                        let _ = sender.send(Err(error));
                    }
                }
            });
        })
        .map_err(|error| format!("spawning the container thread: {error}"))?;
    receiver
        .recv_timeout(START_TIMEOUT)
        .map_err(|error| format!("containers not started within {START_TIMEOUT:?}: {error}"))?
}

type Started = (
    Infra,
    testcontainers_modules::testcontainers::ContainerAsync<Kafka>,
    testcontainers_modules::testcontainers::ContainerAsync<GenericImage>,
);

async fn start_containers() -> Result<Started, String> {
    let kafka = Kafka::default()
        .with_jvm_image()
        .start()
        .await
        .map_err(|error| format!("apache/kafka container: {error}"))?;
    let kafka_host = kafka
        .get_host()
        .await
        .map_err(|error| format!("kafka container host: {error}"))?;
    let kafka_port = kafka
        .get_host_port_ipv4(KAFKA_PORT)
        .await
        .map_err(|error| format!("kafka container port: {error}"))?;

    let registry = GenericImage::new(REGISTRY_IMAGE, REGISTRY_TAG)
        .with_exposed_port(REGISTRY_PORT.tcp())
        .with_wait_for(WaitFor::message_on_stdout("Installed features"))
        .with_env_var("APICURIO_CCOMPAT_USE_CANONICAL_HASH", "true")
        .start()
        .await
        .map_err(|error| format!("{REGISTRY_IMAGE}:{REGISTRY_TAG} container: {error}"))?;
    let registry_host = registry
        .get_host()
        .await
        .map_err(|error| format!("registry container host: {error}"))?;
    let registry_port = registry
        .get_host_port_ipv4(REGISTRY_PORT)
        .await
        .map_err(|error| format!("registry container port: {error}"))?;
    let registry_url = format!("http://{registry_host}:{registry_port}/apis/ccompat/v7");

    // Same as deploy/local/up: Apicurio enforces no compatibility until a level is set.
    let url = format!("{registry_url}/config");
    let response = reqwest::Client::new()
        .put(&url)
        .header(reqwest::header::CONTENT_TYPE, crate::registry::CONTENT_TYPE)
        .body(r#"{"compatibility":"BACKWARD_TRANSITIVE"}"#)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .map_err(|error| format!("setting compatibility at {url}: {error}"))?;
    if !response.status().is_success() {
        return Err(format!(
            "setting compatibility at {url}: status {}",
            response.status()
        ));
    }

    let infra = Infra {
        bootstrap_servers: format!("{kafka_host}:{kafka_port}"),
        schema_registry_url: registry_url,
        source: InfraSource::Containers,
    };
    Ok((infra, kafka, registry))
}
