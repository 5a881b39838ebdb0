//! PingOne to Kafka: polls each tenant and writes raw events (see README).
