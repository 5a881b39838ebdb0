//! Criterion benchmarks of the per-record CPU work: decoding a raw event datum, normalizing a
//! PingOne user into a usage record (JSON parse + mapping + state update), and Avro-encoding the
//! result in the Confluent wire format; plus an access activity into an app usage record; and
//! (group `user_datum`) the Avro datum of one user, hand-written encoder against apache-avro's.
//!
//! Run: `cargo bench -p transformer --bench normalize`.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use schemas::raw::{RawEvent, kind, raw_event_schema};
use schemas::topics::OutputTopics;
use schemas::wire;
use serde_json::json;
use transformer::pipeline::codec::Staged;
use transformer::processor::{Mode, Output, Processor, Source};

fn user_payload(i: usize) -> String {
    json!({
        "_links": {"self": {"href": format!("https://api.pingone.eu/v1/environments/e/users/u-{i}")}},
        "id": format!("3f8e1c2a-0000-4000-8000-{i:012}"),
        "environment": {"id": "5f0c4a52-8d0e-4b6a-9a57-3d1f2b7c9e10"},
        "population": {"id": "pop-1"},
        "username": format!("user{i}@example.com"),
        "email": format!("user{i}@example.com"),
        "name": {"given": "Ada", "family": "Lovelace", "formatted": "Ada Lovelace"},
        "address": {"locality": "London", "region": "Greater London", "countryCode": "GB"},
        "enabled": true, "mfaEnabled": true,
        "lifecycle": {"status": "ACCOUNT_OK"},
        "account": {"canAuthenticate": true, "status": "OK"},
        "verifyStatus": "ENABLED", "type": "Employee",
        "identityProvider": {"type": "PING_ONE"},
        "lastSignOn": {"at": "2026-11-20T10:00:00.123Z", "remoteIp": "10.0.0.1"},
        "createdAt": "2026-01-01T00:00:00Z", "updatedAt": "2026-11-20T10:00:00Z"
    })
    .to_string()
}

fn raw(kind: &str, entity: String, sync: Option<&str>, payload: String) -> RawEvent {
    RawEvent {
        tenant_id: "acme".into(),
        environment_id: "5f0c4a52-8d0e-4b6a-9a57-3d1f2b7c9e10".into(),
        region: "eu".into(),
        kind: kind.into(),
        entity_id: Some(entity),
        sync_id: sync.map(str::to_owned),
        observed_at_ms: 1_795_000_000_000,
        payload,
        producer_version: "bench".into(),
    }
}

fn benches(c: &mut Criterion) {
    let topics = OutputTopics::new("usage.");
    let ids = transformer::pipeline::outputs::SchemaIds {
        users: 1,
        applications: 2,
        app_usage: 3,
        app_signons: 4,
    };
    let users: Vec<RawEvent> = (0..10_000)
        .map(|i| {
            let p = user_payload(i);
            let id = format!("3f8e1c2a-0000-4000-8000-{i:012}");
            raw(kind::USER, id, Some("sync-1"), p)
        })
        .collect();
    let framed: Vec<Vec<u8>> = users
        .iter()
        .map(|e| wire::encode(7, &e.to_avro_datum().unwrap_or_default()))
        .collect();

    let mut g = c.benchmark_group("per_record");
    g.throughput(Throughput::Elements(1));

    let mut i = 0;
    g.bench_function("decode_raw_event", |b| {
        b.iter(|| {
            i = (i + 1) % framed.len();
            let (_, datum) = wire::decode(&framed[i]).unwrap_or((0, &[]));
            black_box(RawEvent::from_avro_datum(raw_event_schema(), datum).ok())
        });
    });

    let payloads: Vec<String> = (0..1_000).map(user_payload).collect();
    g.bench_function("user_json", |b| {
        b.iter(|| {
            i = (i + 1) % payloads.len();
            black_box(transformer::normalize::user(&payloads[i], None).ok())
        });
    });

    let mut processor = Processor::new(1_000);
    let mut out = Vec::new();
    let mut n: i64 = 0;
    g.bench_function("normalize_user", |b| {
        b.iter(|| {
            n += 1;
            // A new sync id every pass over the users, so that none is a duplicate.
            let idx = usize::try_from(n).unwrap_or(0) % users.len();
            let mut e = users[idx].clone();
            e.sync_id = Some(format!("sync-{}", n / 10_000));
            out.clear();
            let source = Source {
                topic: "raw",
                partition: 0,
                offset: n,
            };
            black_box(processor.process(&e, source, Mode::Live, &mut out).ok());
        });
    });

    // Outputs staged as the pipeline stages them (encoded into the batch's buffer, user records
    // given back to the processor), the buffer emptied after each record.
    let mut staged = Staged::default();
    let stage = |staged: &mut Staged, processor: &mut Processor, out: &mut Vec<Output>| {
        for o in out.drain(..) {
            black_box(staged.push_output(&o, (&topics, ids), 0).ok());
            processor.recycle(o);
        }
        staged.clear();
    };
    let mut sample = Vec::new();
    let source = Source {
        topic: "raw",
        partition: 0,
        offset: 1,
    };
    let _ = Processor::new(10).process(&users[0], source, Mode::Live, &mut sample);
    g.bench_function("encode_user_wire_format", |b| {
        b.iter(|| {
            for o in &sample {
                black_box(staged.push_output(o, (&topics, ids), 0).ok());
            }
            staged.clear();
        });
    });

    g.bench_function("normalize_and_encode_user", |b| {
        b.iter(|| {
            n += 1;
            let idx = usize::try_from(n).unwrap_or(0) % users.len();
            let mut e = users[idx].clone();
            e.sync_id = Some(format!("sync-{}", n / 10_000));
            out.clear();
            let source = Source {
                topic: "raw",
                partition: 0,
                offset: n,
            };
            let _ = processor.process(&e, source, Mode::Live, &mut out);
            stage(&mut staged, &mut processor, &mut out);
        });
    });

    let accesses: Vec<RawEvent> = (0..10_000)
        .map(|k| {
            let payload = json!({"id": format!("act-{k}"), "recordedAt": format!("2026-11-{:02}T10:00:00.000Z", 1 + k % 28),
                "action": {"type": "USER.ACCESS_ALLOWED"},
                "actors": {"client": {"id": format!("app-{}", k % 10), "name": "Payroll"}, "user": {"id": format!("u-{}", k % 1000)}}})
            .to_string();
            raw(kind::ACTIVITY, format!("act-{k}"), None, payload)
        })
        .collect();
    // Deduplication off, so that the same activities can be applied again and again.
    let mut usage = Processor::new(0);
    g.bench_function("normalize_and_encode_access", |b| {
        b.iter(|| {
            n += 1;
            let idx = usize::try_from(n).unwrap_or(0) % accesses.len();
            out.clear();
            let source = Source {
                topic: "raw",
                partition: 0,
                offset: n,
            };
            let _ = usage.process(&accesses[idx], source, Mode::Live, &mut out);
            stage(&mut staged, &mut usage, &mut out);
        });
    });
    g.finish();

    // The Avro datum of one typical user record: the hand-written encoder the pipeline uses
    // against apache-avro's generic writer (see `schemas/README.md`, "Encoding speed").
    let Some(Output::User(user)) = sample.first() else {
        panic!("the sample user produced no user record: {sample:?}");
    };
    let mut user = (**user).clone();
    user.access_group_ids = vec!["group-admins".into(), "group-payroll".into()];
    let mut g = c.benchmark_group("user_datum");
    g.throughput(Throughput::Elements(1));
    g.bench_function("hand_written", |b| {
        b.iter(|| black_box(black_box(&user).to_avro_datum().ok()));
    });
    g.bench_function("generic", |b| {
        b.iter(|| black_box(black_box(&user).to_avro_datum_generic().ok()));
    });
    g.finish();
}

criterion_group!(normalize, benches);
criterion_main!(normalize);
