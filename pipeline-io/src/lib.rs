//! The pipeline's I/O layer, shared by every binary (the producer, the transformer with its
//! replay and report): how we talk to Kafka and to the schema registry, how configuration files
//! are loaded, and how a process serves its operations endpoints and stops. It sits between the
//! pure contract crate `schemas` (types and Avro schemas, no I/O) and the binaries' libraries.
//!
//! # Layout
//! - [`kafka`]: one error type for failed Kafka calls, the base client settings, topic creation,
//!   a `read_committed` reader that stops at a topic's end, and the transactional session
//!   ([`kafka::TxnSession`]). Every blocking librdkafka call runs off the async runtime.
//! - [`registry`]: the Confluent-compatible schema registry client (Apicurio's ccompat API).
//! - [`secret`]: [`secret::Secret`], a string that never prints.
//! - [`config`]: TOML files with `<BINARY>__…` environment overrides, every error collected,
//!   secrets redacted, and the `[schema_registry]` and `[operations]` sections both binaries share.
//! - [`ops`]: the `/metrics`, `/healthz`, `/readyz` listener; [`shutdown`]: SIGINT/SIGTERM to a
//!   cancellation token; [`logging`]: the tracing subscriber; [`cli`]: what each `main.rs`
//!   shares (runtime, signals, exit status). [`error_text`]: an error with each cause once.

pub mod cli;
pub mod config;
pub mod kafka;
pub mod logging;
pub mod ops;
pub mod registry;
pub mod secret;
pub mod shutdown;

/// An error and its causes, `: `-separated, each written once: many errors include their
/// cause's text in their own message (so that a log line shows it), and printing the chain as
/// well would say it twice ("X: X"); others (reqwest's "error sending request for url") hide
/// the cause, which only the chain tells.
pub fn error_text(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let next = cause.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer: {source}")]
    struct Outer {
        source: Inner,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("inner failed")]
    struct Inner;

    #[derive(Debug, thiserror::Error)]
    #[error("bare")]
    struct Bare {
        #[source]
        source: Inner,
    }

    #[test]
    fn a_cause_is_printed_once() {
        assert_eq!(error_text(&Outer { source: Inner }), "outer: inner failed");
        assert_eq!(error_text(&Bare { source: Inner }), "bare: inner failed");
    }
}
