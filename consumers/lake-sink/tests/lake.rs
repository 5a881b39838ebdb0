//! Integration tests of the `lake-sink` binary against the real broker and registry, read back
//! with an independent reader (Python `deltalake`, `tests/read_lake.py`):
//!
//! 1. every committed record of the three topics is in its table exactly once, with equal
//!    values (each Avro field against its column), tombstones as `deleted`, an unframed value
//!    with `decode_error`, aborted records absent; the current-state query
//!    (`queries/current_state.sql`) equals the latest value of each key; a second run adds
//!    nothing;
//! 2. `kill -9` of the sink at random moments, over 20 times, while records keep coming: still
//!    exactly once;
//! 3. two instances in one group, one of them killed: the survivor takes every partition, and
//!    still exactly once;
//! 4. a new writer schema with one more field: a new column, null in the old rows, and no data
//!    file rewritten;
//! 5. compaction while a sink writes, then vacuum: every record still exactly once, fewer files.
//! 6. and 7. tables on S3 and on Azure Blob storage (`s3://`, `az://`: an S3-compatible store
//!    and the Azure Storage emulator, which `deploy/local/test` starts): every record exactly
//!    once with equal values, each partition's `txn` version its last offset, and a second run
//!    resumes from those versions and adds nothing.
//! 8. a commit refused at the end check (another writer moved a partition meanwhile): the sink
//!    reads again from the tables' versions and stops only once every record is in.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use apache_avro::Schema;
use common::*;

const CATCH_UP: Duration = Duration::from_secs(180);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_record_once_with_equal_values_and_nothing_added_on_restart() {
    let topics = Topics::create("once").await;
    let mut w = Workload::new(&topics);
    w.syncs(0, 1_000, 10, 1_500);
    w.unframed("users", "globex/u-unframed".to_owned());
    let records = w.finish();
    // Records of an aborted transaction, before and amid the committed ones.
    let mut a = Workload::new(&topics);
    for i in 0..50 {
        a.user("acme", 1_000_000 + i, 1);
        a.tombstone("applications", format!("acme/aborted-{i}"));
    }
    let aborted = a.finish();
    let writer = Writer::new();
    writer.abort(&aborted[..50]);
    let (first, rest) = records.split_at(records.len() / 2);
    writer.write_all(first, 500, Duration::ZERO);
    writer.abort(&aborted[50..]);
    writer.write_all(rest, 500, Duration::ZERO);
    let lake = Lake::new("once", topics);

    let started = Instant::now();
    lake.catch_up(&small_flushes(1_500, 30_000), CATCH_UP);
    eprintln!(
        "{} records caught up in {:?}",
        records.len(),
        started.elapsed()
    );

    let sql = CURRENT_STATE_SQL;
    let mut args = vec!["--rows", "--sql", sql];
    let txn = lake.txn_args();
    args.extend(txn.iter().map(String::as_str));
    let read = lake.read(&args);
    let topic_records = lake.topics.read_all().await;
    for (i, table) in TABLES.iter().enumerate() {
        let records = &topic_records[i];
        let t = &read[*table];
        let expected = expected_rows(lake.topics.topic(table), records, &lake.topics.schemas);
        let columns = table_columns(&field_names(contract_schema(table)));
        assert_exactly_once(table, t, records, "first run");
        assert_rows(table, t, &expected, &columns, true);
        assert_current(table, t, &expected, &columns);
        assert_txn_at_last_offsets(table, t, records);
    }
    // The workload has what the checks above are about.
    let users = read["users"]["rows"].as_array().unwrap();
    let deleted = users.iter().filter(|r| r["deleted"] == true).count();
    let undecodable: Vec<_> = users
        .iter()
        .filter(|r| r["decode_error"].is_string())
        .collect();
    assert!(deleted >= 30, "{deleted} tombstones in users");
    assert_eq!(undecodable.len(), 1, "{undecodable:?}");
    assert_eq!(undecodable[0]["record_key"], "globex/u-unframed");
    assert!(undecodable[0]["user_id"].is_null());
    let tenants: std::collections::BTreeSet<&str> =
        users.iter().filter_map(|r| r["tenant"].as_str()).collect();
    assert_eq!(tenants.len(), TENANTS.len());
    let apps = read["applications"]["rows"].as_array().unwrap();
    assert!(apps.iter().any(|r| r["deleted"] == true));
    assert!(
        apps.iter()
            .all(|r| !r["record_key"].as_str().unwrap().contains("aborted"))
    );

    // Again: nothing new, so nothing is written.
    run_again_commits_nothing(&lake, &read, &topic_records, "second run");
    let _ = std::fs::remove_dir_all(&lake.base);
}

/// Kills of test 2.
const KILLS: usize = 22;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_minus_nine_at_random_moments_never_duplicates_or_loses_a_record() {
    let seed = seed();
    eprintln!("kill test seed {seed}");
    let mut rng = Lcg(seed);
    let topics = Topics::create("kill").await;
    let mut w = Workload::new(&topics);
    w.syncs(0, 20_000, 100, 16_000);
    let records = w.finish();
    let total = records.len();
    let lake = Lake::new("kill", topics);
    // The writer keeps writing, in transactions of 2,000, through most of the kills.
    let writer = write_in_background(records, 2_000, Duration::from_millis(500));
    let flushes = small_flushes(2_000, 300);
    let started = Instant::now();
    let mut kills = Vec::new();
    // A new member of a group whose member was killed waits for that member's session to time
    // out (10 s) before anything is assigned. So every other run joins one group as the same
    // static member (`group.instance.id`), which takes the killed one's place at once and
    // finds the offsets the group committed (which may lag the tables); the runs between
    // join groups of their own, with no committed offsets: where each partition resumes is
    // the tables' record alone.
    let shared_group = test_harness::unique_name("lake-kill-group");
    let member = test_harness::unique_name("lake-kill-member");
    for k in 0..KILLS {
        let before = lake.commits();
        let mut settings = flushes.clone();
        if k % 2 == 0 {
            settings.push(("LAKE_SINK__KAFKA__GROUP_ID", shared_group.clone()));
            settings.push((
                "LAKE_SINK__KAFKA__LIBRDKAFKA_OPTIONS__group.instance.id",
                member.clone(),
            ));
        } else {
            settings.push((
                "LAKE_SINK__KAFKA__GROUP_ID",
                test_harness::unique_name("lake-kill-group"),
            ));
        }
        let mut sink = lake.spawn(&["run"], &settings);
        let delay = Duration::from_millis(300 + rng.next(2_200));
        tokio::time::sleep(delay).await;
        assert!(
            sink.running(),
            "the sink stopped by itself; {}",
            sink.log_tail()
        );
        sink.kill();
        let writing = !writer.is_finished();
        kills.push((delay.as_millis(), lake.commits() - before, writing));
    }
    let killing = started.elapsed();
    writer.join().unwrap();
    eprintln!(
        "{total} records; {KILLS} kills in {killing:?}; (delay ms, commits during the run, \
         writer still writing): {kills:?}"
    );
    let writing = kills.iter().filter(|k| k.2).count();
    assert!(
        writing >= KILLS / 2,
        "only {writing} kills while records were being written: {kills:?}"
    );
    let grew = kills.iter().filter(|k| k.1 > 0).count();
    assert!(
        grew >= 5,
        "only {grew} of the killed runs committed anything: {kills:?}"
    );

    let caught = Instant::now();
    let mut settings = flushes.clone();
    settings.push(("LAKE_SINK__KAFKA__GROUP_ID", shared_group));
    settings.push((
        "LAKE_SINK__KAFKA__LIBRDKAFKA_OPTIONS__group.instance.id",
        member,
    ));
    lake.catch_up(&settings, CATCH_UP);
    eprintln!("final run caught up in {:?}", caught.elapsed());
    let read = lake.read(&["--keys"]);
    let topic_records = lake.topics.read_all().await;
    assert_eq!(
        topic_records.iter().map(Vec::len).sum::<usize>(),
        total,
        "records committed to the topics"
    );
    for (i, table) in TABLES.iter().enumerate() {
        assert_exactly_once(
            table,
            &read[*table],
            &topic_records[i],
            &format!("seed {seed}; logs in {}", lake.base.display()),
        );
    }
    let _ = std::fs::remove_dir_all(&lake.base);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_the_partitions_and_the_survivor_of_a_kill_takes_them_all() {
    let started = Instant::now();
    let topics = Topics::create("group").await;
    let mut w = Workload::new(&topics);
    w.syncs(0, 2_000, 20, 2_000);
    let first = w.finish();
    let mut w = Workload::new(&topics);
    w.syncs(100_000, 1_500, 10, 1_500);
    let second = w.finish();
    let total = first.len() + second.len();
    // Both instances: one group, one location, one app id (the default), small flushes.
    let lake = Lake::new("group", topics);
    let settings = |port: u16| {
        let mut s = small_flushes(1_000, 300);
        s.push((
            "LAKE_SINK__OPERATIONS__LISTEN_ADDR",
            format!("127.0.0.1:{port}"),
        ));
        s
    };
    // Records arrive from before the first instance starts until after both own partitions:
    // partitions move from one to the other while rows are buffered.
    let writer = write_in_background(first, 300, Duration::from_millis(100));
    let a = lake.spawn(&["run"], &settings(test_harness::ops::free_port()));
    std::thread::sleep(Duration::from_millis(1_500));
    let mut b = lake.spawn(&["run"], &settings(test_harness::ops::free_port()));
    let assigned = |sink: &Sink| sink.metric("lake_sink_assigned_partitions").unwrap_or(0.0);
    let rows = |sink: &Sink| sink.metric("lake_sink_rows_total").unwrap_or(0.0);
    let mut shares = (0.0, 0.0);
    wait_until(
        "both instances own partitions, 9 in all",
        Duration::from_secs(60),
        Duration::from_millis(200),
        || {
            shares = (assigned(&a), assigned(&b));
            shares.0 > 0.0 && shares.1 > 0.0 && shares.0 + shares.1 == 9.0
        },
    );
    let writing = !writer.is_finished();
    eprintln!(
        "partitions owned: {shares:?} after {:?} (records still being written: {writing})",
        started.elapsed()
    );
    writer.join().unwrap();
    wait_until(
        "both instances commit rows",
        Duration::from_secs(60),
        Duration::from_millis(200),
        || rows(&a) > 0.0 && rows(&b) > 0.0,
    );
    assert_eq!(assigned(&a) + assigned(&b), 9.0, "{}", b.log_tail());
    // More records; one instance dies while they come.
    let writer = write_in_background(second, 300, Duration::from_millis(50));
    std::thread::sleep(Duration::from_millis(700));
    let rows_of_a = rows(&a);
    a.kill();
    eprintln!(
        "killed one instance after it committed {rows_of_a} rows, {:?} in",
        started.elapsed()
    );
    wait_until(
        "the survivor owns all 9 partitions",
        Duration::from_secs(60),
        Duration::from_millis(200),
        || assigned(&b) == 9.0,
    );
    eprintln!("the survivor owns all 9 after {:?}", started.elapsed());
    writer.join().unwrap();
    let want = topic_counts(&lake.topics).await;
    assert_eq!(want.iter().sum::<usize>(), total);
    // Until the tables hold as many rows as the topics records (more, when a record was
    // written twice: the check below says which).
    let waiting = Instant::now();
    loop {
        let read = lake.read(&[]);
        let got: Vec<usize> = TABLES
            .iter()
            .map(|t| read[*t]["count"].as_u64().unwrap_or(0) as usize)
            .collect();
        if got.iter().zip(&want).all(|(g, w)| g >= w) {
            break;
        }
        assert!(
            waiting.elapsed() < Duration::from_secs(90),
            "the tables hold {got:?} rows after 90 s, the topics {want:?} records; {}",
            b.log_tail()
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    assert!(b.running(), "{}", b.log_tail());
    let log = b.log_tail();
    let status = b.terminate(Duration::from_secs(60));
    assert!(status.success(), "exit after SIGTERM: {status}; {log}");
    eprintln!("checked after {:?}", started.elapsed());
    let read = lake.read(&["--keys"]);
    let topic_records = lake.topics.read_all().await;
    for (i, table) in TABLES.iter().enumerate() {
        assert_exactly_once(
            table,
            &read[*table],
            &topic_records[i],
            &format!("logs in {}", lake.base.display()),
        );
    }
    let _ = std::fs::remove_dir_all(&lake.base);
}

/// The contract users schema plus one nullable field.
fn users_v2() -> String {
    let mut schema: serde_json::Value =
        serde_json::from_str(schemas::usage::USER_USAGE_SCHEMA).unwrap();
    schema["fields"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!(
            {"name": "cost_center", "type": ["null", "string"], "default": null}
        ));
    schema.to_string()
}

/// User `i` of `tenant` written with schema `v2` (id `id`), its `cost_center` as given.
fn user_v2(v2: &Schema, id: u32, tenant: &str, i: usize, cost_center: Option<String>) -> Vec<u8> {
    use apache_avro::types::Value as Avro;
    let v1 = Schema::parse_str(schemas::usage::USER_USAGE_SCHEMA).unwrap();
    let datum = user(tenant, i, 7).to_avro_datum().unwrap();
    let reader = apache_avro::reader::datum::GenericDatumReader::builder(&v1)
        .reader_schema(v2)
        .build()
        .unwrap();
    let Avro::Record(mut fields) = reader.read_value(&mut datum.as_slice()).unwrap() else {
        panic!("not a record")
    };
    let field = fields.iter_mut().find(|(n, _)| n == "cost_center").unwrap();
    field.1 = match cost_center {
        None => Avro::Union(0, Box::new(Avro::Null)),
        Some(c) => Avro::Union(1, Box::new(Avro::String(c))),
    };
    let bytes = apache_avro::writer::datum::GenericDatumWriter::builder(v2)
        .build()
        .unwrap()
        .write_value_to_vec(Avro::Record(fields))
        .unwrap();
    schemas::wire::encode(id, &bytes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_writer_schema_adds_a_column_and_rewrites_no_file() {
    let topics = Topics::create("evolve").await;
    let mut w = Workload::new(&topics);
    w.syncs(0, 100, 5, 100);
    let writer = Writer::new();
    writer.write_all(&w.finish(), 500, Duration::ZERO);
    let mut lake = Lake::new("evolve", topics);
    lake.catch_up(&[], CATCH_UP);
    let before = lake.read(&["--files"]);

    // Version 2 of the users schema, registered under the test's subject.
    let text = users_v2();
    let registry = test_harness::registry::RegistryClient::from_env().unwrap();
    let subject = format!("{}-value", lake.topics.topic("users"));
    let id = register(&registry, &subject, &text).await;
    assert_ne!(id, lake.topics.id("users"));
    let v2 = Schema::parse_str(&text).unwrap();
    lake.topics.schemas.insert(id, v2.clone());
    let mut w = Workload::new(&lake.topics);
    let mut with_value = 0;
    for (n, i) in (50..150).enumerate() {
        // Updates of keys written with version 1, and new keys; a few without a value.
        let cost_center = (n % 4 != 3).then(|| format!("cc-{}", i % 7));
        with_value += usize::from(cost_center.is_some());
        let tenant = TENANTS[n % TENANTS.len()];
        let value = user_v2(&v2, id, tenant, i, cost_center);
        w.push("users", format!("{tenant}/u-{i}"), Some(value));
    }
    // A writer still on version 1 afterwards.
    w.user("acme", 10, 8);
    w.application("acme", 1, 8);
    writer.write_all(&w.finish(), 50, Duration::ZERO);
    lake.catch_up(&[], CATCH_UP);

    let read = lake.read(&["--rows", "--files", "--sql", CURRENT_STATE_SQL]);
    let topic_records = lake.topics.read_all().await;
    for (i, table) in TABLES.iter().enumerate() {
        let t = &read[*table];
        let mut fields = field_names(contract_schema(table));
        if *table == "users" {
            fields.push("cost_center".into());
        }
        let want: std::collections::BTreeSet<String> = table_columns(&fields).into_iter().collect();
        let columns = columns_of(t);
        assert_eq!(
            columns
                .iter()
                .cloned()
                .collect::<std::collections::BTreeSet<_>>(),
            want,
            "table {table}: columns"
        );
        let expected = expected_rows(
            lake.topics.topic(table),
            &topic_records[i],
            &lake.topics.schemas,
        );
        assert_exactly_once(table, t, &topic_records[i], "after the new schema");
        assert_rows(table, t, &expected, &columns, true);
        assert_current(table, t, &expected, &columns);
        // No data file of the first run was rewritten or removed.
        let now: std::collections::BTreeSet<&str> = t["files"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|f| f.as_str())
            .collect();
        for file in before[*table]["files"].as_array().unwrap() {
            assert!(
                now.contains(file.as_str().unwrap()),
                "table {table}: {file} of the first run is gone"
            );
        }
    }
    let users = read["users"]["rows"].as_array().unwrap();
    let set = users
        .iter()
        .filter(|r| r["cost_center"].is_string())
        .count();
    assert_eq!(set, with_value, "rows with a cost_center");
    let old = users
        .iter()
        .filter(|r| r["sync_id"] == "acme-s1" && r["cost_center"].is_null())
        .count();
    assert!(
        old >= 100,
        "rows of version 1 with a null cost_center: {old}"
    );
    let _ = std::fs::remove_dir_all(&lake.base);
}

/// The number of data files of each table, by the reader.
fn file_counts(read: &serde_json::Value) -> Vec<usize> {
    TABLES
        .iter()
        .map(|t| read[*t]["files"].as_array().unwrap().len())
        .collect()
}

/// Parquet files on disk under each table (referenced or not).
fn files_on_disk(lake: &Lake) -> Vec<usize> {
    fn walk(dir: &std::path::Path) -> usize {
        std::fs::read_dir(dir).map_or(0, |d| {
            d.filter_map(Result::ok)
                .map(|e| {
                    let path = e.path();
                    if path.is_dir() {
                        if path.ends_with("_delta_log") {
                            0
                        } else {
                            walk(&path)
                        }
                    } else {
                        usize::from(path.extension().is_some_and(|x| x == "parquet"))
                    }
                })
                .sum()
        })
    }
    TABLES
        .iter()
        .map(|t| walk(&lake.location.join(t)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_beside_a_running_sink_then_vacuum_keep_every_record_once() {
    let topics = Topics::create("maintain").await;
    let mut w = Workload::new(&topics);
    w.syncs(0, 600, 40, 600);
    let writer = Writer::new();
    writer.write_all(&w.finish(), 500, Duration::ZERO);
    let lake = Lake::new("maintain", topics);
    // Many small files: a commit every 60 rows.
    lake.catch_up(&small_flushes(60, 30_000), CATCH_UP);
    let before = lake.read(&["--files"]);
    let small = file_counts(&before);
    eprintln!("data files before compaction: {small:?}");
    assert!(
        small.iter().all(|n| *n >= 10),
        "too few files to compact: {small:?}"
    );

    // A sink keeps writing new records while the compaction runs.
    let mut w = Workload::new(&lake.topics);
    w.syncs(100_000, 300, 5, 300);
    let more = write_in_background(w.finish(), 50, Duration::from_millis(100));
    let mut settings = small_flushes(5_000, 300);
    settings.push((
        "LAKE_SINK__OPERATIONS__LISTEN_ADDR",
        format!("127.0.0.1:{}", test_harness::ops::free_port()),
    ));
    let mut sink = lake.spawn(&["run"], &settings);
    let rows = |sink: &Sink| sink.metric("lake_sink_rows_total").unwrap_or(0.0);
    wait_until(
        "the running sink commits",
        Duration::from_secs(60),
        Duration::from_millis(100),
        || rows(&sink) > 0.0,
    );
    let (rows_before, compacting) = (rows(&sink), Instant::now());
    let compacted = lake.maintain(&["--compact", "--min-files", "2"]);
    let (rows_after, writing) = (rows(&sink), !more.is_finished());
    eprintln!(
        "compaction in {:?}, the sink committing {rows_before} -> {rows_after} rows meanwhile \
         (records still being written: {writing}): {compacted}",
        compacting.elapsed()
    );
    assert!(
        rows_after > rows_before,
        "the sink committed nothing while the compaction ran"
    );
    let compacted_now = file_counts(&lake.read(&["--files"]));
    let done = compacted.as_array().unwrap();
    assert_eq!(done.len(), 3, "{compacted}");
    for d in done {
        assert!(
            d["partitions_compacted"].as_u64().unwrap() > 0
                && d["files_removed"].as_u64().unwrap() > d["files_added"].as_u64().unwrap(),
            "{d}"
        );
    }
    more.join().unwrap();
    assert!(sink.running(), "{}", sink.log_tail());
    let status = sink.terminate(Duration::from_secs(60));
    assert!(status.success(), "{status}");
    lake.catch_up(&[], CATCH_UP);

    let read = lake.read(&["--keys", "--files"]);
    let topic_records = lake.topics.read_all().await;
    for (i, table) in TABLES.iter().enumerate() {
        assert_exactly_once(table, &read[*table], &topic_records[i], "after compaction");
    }
    let after = file_counts(&read);
    // The files compaction replaced stay replaced while the sink goes on committing new ones
    // (how many new ones depends on how long the run takes, so the totals are not compared).
    let kept: Vec<usize> = TABLES
        .iter()
        .map(|t| {
            let files = |v: &serde_json::Value| -> std::collections::HashSet<String> {
                v[*t]["files"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|f| f.as_str().unwrap().to_owned())
                    .collect()
            };
            files(&before).intersection(&files(&read)).count()
        })
        .collect();
    eprintln!(
        "data files: {small:?} before, {compacted_now:?} after compaction, {after:?} now, \
         {kept:?} of those before still in the table"
    );
    for i in 0..TABLES.len() {
        assert!(
            kept[i] < small[i] / 2,
            "table {}: {} of its {} files before compaction are still in it",
            TABLES[i],
            kept[i],
            small[i]
        );
    }

    // With no sink running: compacted to one file per partition, then vacuumed.
    lake.maintain(&["--compact", "--min-files", "2"]);
    let vacuumed = lake.maintain(&["--vacuum", "--retention-hours", "0", "--force"]);
    eprintln!("vacuum: {vacuumed}");
    for d in vacuumed.as_array().unwrap() {
        assert!(d["files_vacuumed"].as_u64().unwrap() > 0, "{d}");
    }
    let read = lake.read(&["--rows", "--files", "--sql", CURRENT_STATE_SQL]);
    let referenced = file_counts(&read);
    assert_eq!(
        files_on_disk(&lake),
        referenced,
        "files on disk after vacuum, and files the tables reference"
    );
    for (i, table) in TABLES.iter().enumerate() {
        let t = &read[*table];
        let rows = t["rows"].as_array().unwrap();
        let partitions: std::collections::BTreeSet<(String, i64)> = rows
            .iter()
            .map(|r| {
                (
                    r["tenant"].as_str().unwrap().to_owned(),
                    r["record_date"].as_i64().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            referenced[i],
            partitions.len(),
            "table {table}: one file per (tenant, record_date) after compaction"
        );
        let expected = expected_rows(
            lake.topics.topic(table),
            &topic_records[i],
            &lake.topics.schemas,
        );
        let columns = table_columns(&field_names(contract_schema(table)));
        assert_exactly_once(table, t, &topic_records[i], "after vacuum");
        assert_rows(table, t, &expected, &columns, true);
        assert_current(table, t, &expected, &columns);
    }
    let _ = std::fs::remove_dir_all(&lake.base);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_on_s3_hold_every_record_once_and_a_second_run_resumes_from_them() {
    let topics = Topics::create("s3").await;
    let records = small_workload(&topics);
    let lake = Lake::on_s3("s3", topics);
    once_then_resumed(&lake, records, "S3").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_on_azure_hold_every_record_once_and_a_second_run_resumes_from_them() {
    let topics = Topics::create("azure").await;
    let records = small_workload(&topics);
    let lake = Lake::on_azure("azure", topics);
    once_then_resumed(&lake, records, "Azure Blob").await;
}

/// Test 8: a commit found stale at the end check. The sink has read everything and holds it
/// (one window per table, committed only by the end check) when another writer moves users'
/// partition 0 to offset `x` (a `txn` action, as a faster owner of the partition would).
/// The sink's commit is then refused, every window dropped and every partition sought back to
/// its table's version; `--until-caught-up` must read them again and stop only once every
/// record after the tables' versions is in, not right after the refusal (the bug of 91590e5).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_refused_at_the_end_is_read_again_before_the_sink_stops() {
    use lake_sink::table::{Committed, LakeTable};

    let topics = Topics::create("stale-end").await;
    small_workload(&topics);
    let mut lake = Lake::new("stale-end", topics);
    let topic_records = lake.topics.read_all().await;
    let users = &topic_records[table_index("users")];
    // Partition 0's offsets up to `x` are claimed by the other writer.
    let x = users
        .iter()
        .filter(|r| r.partition == 0)
        .nth(20)
        .unwrap()
        .offset;
    // The sink reads the topics in well under a second; it is stopped right after its
    // assignment, and the attempt starts again (fresh tables and group) if it had committed.
    let hold = [
        ("LAKE_SINK__LAKE__FLUSH_MAX_ROWS", "1000000".to_owned()),
        ("LAKE_SINK__LAKE__FLUSH_INTERVAL_MS", "600000".to_owned()),
    ];
    let mut sink = None;
    for attempt in 0..10 {
        lake.location = lake.base.join(format!("lake-{attempt}"));
        lake.group = test_harness::unique_name("lake-sink-group");
        let s = lake.spawn(&["run", "--until-caught-up"], &hold);
        let started = Instant::now();
        while !s.logged("assignment changed") && started.elapsed() < CATCH_UP {
            std::thread::sleep(Duration::from_millis(1));
        }
        s.signal("STOP");
        // Each table at version 0 (created, nothing committed): the moment wanted.
        if lake.commits() == TABLES.len() {
            sink = Some(s);
            break;
        }
        s.signal("CONT");
        eprintln!("attempt {attempt}: the sink committed before it was stopped; again");
    }
    let mut sink = sink.expect("the sink was never stopped before its first commit");

    let url = url::Url::from_directory_path(lake.location.join("users")).unwrap();
    let schema = Schema::parse_str(contract_schema("users")).unwrap();
    let mut other = LakeTable::open(
        "users",
        &url,
        &std::collections::BTreeMap::new(),
        lake.topics.topic("users"),
        "lake-sink",
        &schema,
        std::sync::Arc::new(|_| {}),
    )
    .await
    .unwrap();
    let moved = other
        .commit(
            &[],
            &std::collections::BTreeMap::from([(0, x)]),
            &std::collections::BTreeMap::from([(0, None)]),
        )
        .await
        .unwrap();
    assert!(matches!(moved, Committed::Written { .. }), "{moved:?}");
    sink.signal("CONT");
    let status = sink.wait(CATCH_UP);
    assert!(status.success(), "lake-sink: {status}; {}", sink.log_tail());
    assert!(
        sink.logged("another instance wrote these partitions meanwhile"),
        "the sink's commit was not refused: nothing tested; {}",
        sink.log_tail()
    );

    let read = lake.read(&["--keys"]);
    for (i, table) in TABLES.iter().enumerate() {
        let wanted: Vec<_> = topic_records[i]
            .iter()
            .filter(|r| !(*table == "users" && r.partition == 0 && r.offset <= x))
            .cloned()
            .collect();
        assert_exactly_once(table, &read[*table], &wanted, "after the refused commit");
    }
    let _ = std::fs::remove_dir_all(&lake.base);
}

/// Three syncs of 600 users and 10 applications per tenant, written to `topics`.
fn small_workload(topics: &Topics) -> usize {
    let mut w = Workload::new(topics);
    w.syncs(0, 600, 10, 800);
    let records = w.finish();
    Writer::new().write_all(&records, 500, Duration::ZERO);
    records.len()
}

/// Tests 6 and 7 on `lake`'s object store: a run with small flushes (several commits per
/// table, each a put-if-absent of the next log entry) puts every record of the topics in its
/// table once with equal values and each partition's `txn` version at its last offset; a
/// second run resumes from those versions and commits nothing.
async fn once_then_resumed(lake: &Lake, written: usize, store: &str) {
    lake.catch_up(&small_flushes(400, 30_000), CATCH_UP);
    let mut args = vec!["--rows"];
    let txn = lake.txn_args();
    args.extend(txn.iter().map(String::as_str));
    let read = lake.read(&args);
    let topic_records = lake.topics.read_all().await;
    assert_eq!(
        topic_records.iter().map(Vec::len).sum::<usize>(),
        written,
        "records on the topics"
    );
    for (i, table) in TABLES.iter().enumerate() {
        let records = &topic_records[i];
        let t = &read[*table];
        assert_eq!(t["exists"], true, "table {table} on {:?}", lake.location);
        let expected = expected_rows(lake.topics.topic(table), records, &lake.topics.schemas);
        let columns = table_columns(&field_names(contract_schema(table)));
        assert_exactly_once(table, t, records, &format!("first run on {store}"));
        assert_rows(table, t, &expected, &columns, true);
        assert_txn_at_last_offsets(table, t, records);
    }
    assert!(
        read["users"]["version"].as_i64().unwrap() >= 2,
        "users: several commits expected, version {}",
        read["users"]["version"]
    );

    // Again: each partition resumes after its txn version, so nothing is written.
    let what = format!("second run on {store}");
    run_again_commits_nothing(lake, &read, &topic_records, &what);
    let _ = std::fs::remove_dir_all(&lake.base);
}

/// Runs the sink on `lake` again with nothing new on the topics: every table still holds each
/// record of `topic_records` once, at the version of `read` (nothing committed).
fn run_again_commits_nothing(
    lake: &Lake,
    read: &serde_json::Value,
    topic_records: &[Vec<test_harness::kafka::ConsumedRecord>],
    context: &str,
) {
    lake.catch_up(&[], CATCH_UP);
    let again = lake.read(&["--keys"]);
    for (i, table) in TABLES.iter().enumerate() {
        assert_exactly_once(table, &again[*table], &topic_records[i], context);
        assert_eq!(
            again[*table]["version"], read[*table]["version"],
            "table {table}: a run with nothing to read committed something ({context})"
        );
    }
}
