//! Probing a binary's operations endpoints from a test, and a "broker" that has stopped
//! answering: what the health tests of both binaries share.
//!
//! [`get`] is a minimal blocking HTTP/1.1 GET with one bound on connecting, writing and reading,
//! so a listener that does not answer in time is a failure rather than a hang. [`HungBroker`]
//! accepts TCP connections and never answers, as a stopped (SIGSTOP) or partitioned broker
//! does: every Kafka call against it waits for its timeout.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// `GET path` on `addr`: the status code and body, or why there was none within `timeout`.
///
/// # Errors
/// A description of what failed (connect, write, read, a malformed answer).
pub fn get(addr: SocketAddr, path: &str, timeout: Duration) -> Result<(u16, String), String> {
    let started = Instant::now();
    let mut stream =
        TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connect: {e}"))?;
    let left = |started: Instant| {
        timeout
            .saturating_sub(started.elapsed())
            .max(Duration::from_millis(1))
    };
    stream
        .set_write_timeout(Some(left(started)))
        .map_err(|e| e.to_string())?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| format!("write: {e}"))?;
    stream
        .set_read_timeout(Some(left(started)))
        .map_err(|e| e.to_string())?;
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .map_err(|e| format!("no answer within {timeout:?}: {e}"))?;
    if started.elapsed() > timeout {
        return Err(format!("answered after {:?}", started.elapsed()));
    }
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("not an HTTP answer: {answer:?}"))?;
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// A free TCP port on loopback (bound, then released).
///
/// # Panics
/// If no port can be bound.
pub fn free_port() -> u16 {
    #[allow(clippy::expect_used)]
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port on loopback")
        .port()
}

/// A listener that accepts connections and never answers; it lives as long as the process.
#[derive(Debug)]
pub struct HungBroker {
    /// Its address, to give as `bootstrap.servers`.
    pub addr: SocketAddr,
}

impl HungBroker {
    /// Starts accepting on a free loopback port.
    ///
    /// # Panics
    /// If no port can be bound.
    pub fn start() -> Self {
        #[allow(clippy::expect_used)]
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        #[allow(clippy::expect_used)]
        let addr = listener.local_addr().expect("local address");
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for stream in listener.incoming().flatten() {
                held.push(stream);
            }
        });
        Self { addr }
    }
}

/// A child process killed (SIGKILL) and reaped when dropped, also when a test panics.
#[derive(Debug)]
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// How long one probe of [`assert_answering`] may take. A blocking call on the runtime holds it
/// for a whole Kafka timeout (the outage tests use 20 s), far over this bound; a loaded 2-core
/// machine answered after 1.1 s with nothing blocked, so the bound is not 1 s.
pub const PROBE_BOUND: Duration = Duration::from_secs(3);

/// Waits up to 20 s for `/healthz` on `addr` to answer, then probes it every 200 ms for
/// `duration`: each probe must answer 200 within [`PROBE_BOUND`]. With `readyz`, `/readyz` must
/// answer that status within the same bound.
///
/// # Panics
/// At the first probe that fails, naming how long into the probing it was.
pub fn assert_answering(addr: SocketAddr, duration: Duration, readyz: Option<u16>) {
    let started = Instant::now();
    while get(addr, "/healthz", Duration::from_secs(1)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the operations listener on {addr} never came up"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let probing = Instant::now();
    let mut probes = 0;
    while probing.elapsed() < duration {
        let health = get(addr, "/healthz", PROBE_BOUND);
        assert_eq!(
            health.as_ref().map(|(status, _)| *status),
            Ok(200),
            "/healthz after {:?} of probing: {health:?}",
            probing.elapsed()
        );
        if let Some(want) = readyz {
            let ready = get(addr, "/readyz", PROBE_BOUND);
            assert_eq!(
                ready.as_ref().map(|(status, _)| *status),
                Ok(want),
                "/readyz after {:?} of probing: {ready:?}",
                probing.elapsed()
            );
        }
        probes += 1;
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(probes >= 5, "only {probes} probes in {duration:?}");
}
