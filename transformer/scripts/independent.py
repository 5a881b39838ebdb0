#!/usr/bin/env python3
# transformer/scripts/independent.py — an independent implementation of the transformer's user
# normalization, for the benchmark (producer/bench/run.sh, BENCH_INDEPENDENT=1).
#
# Written from the specification only — the Avro schemas' `doc` strings
# (schemas/avro/raw_event.avsc, user_usage.avsc), /work/shared/pingone-api.md (PingOne's user
# JSON), schemas/README.md (raw event kinds) and transformer/README.md "What it does" — not from
# the transformer's Rust code. Two uses:
#
# 1. A second implementation to time beside the transformer: the same exactly-once work in
#    Python (confluent-kafka, fastavro).
#      independent.py RAW_TOPIC OUTPUT_TOPIC [--schema-subject SUBJECT]
#    reads RAW_TOPIC from its beginning (or its group's committed offsets) to its end
#    (read_committed, plain assign, group OUTPUT_TOPIC's own unless --group-id), decodes each raw
#    event (Confluent wire format, writer schemas fetched from the registry by id), normalizes
#    each `user` event into a UserUsage record, encodes it with the registered user_usage schema
#    (taken from SUBJECT, by default usage.users.v1-value; the file schemas/avro/user_usage.avsc
#    when the subject does not exist; registered again as OUTPUT_TOPIC-value) in the Confluent
#    wire format, and writes it keyed '<tenant>/<user id>' to OUTPUT_TOPIC (created compacted, one
#    partition per raw partition, each record on its raw record's partition) in Kafka
#    transactions of 5,000 raw events, each committing the consumed offsets with
#    send_offsets_to_transaction. Other kinds are decoded and counted; no application, app usage
#    or dead-letter records are written (dead letters are counted: records not in the wire
#    format, unknown schema ids, bad Avro or trailing bytes, a key of another tenant, a user whose
#    JSON is invalid or whose id is missing/empty/blank, `oversized` markers, and a sync_completed
#    whose counts differ from what was seen or whose sync_started was not seen), and there are
#    no deletions and no membership rewrites. access_group_ids come from the same sync's
#    group_membership events for groups named by its applications' accessControl.group.
#    Prints one JSON line: events, users written, dead letters, seconds (wall, from the process's
#    start), CPU seconds (user + system), peak RSS, events/s and CPU µs per event.
#
# 2. A check of the transformer's output:
#      independent.py RAW_TOPIC --compare USERS_TOPIC
#    reads USERS_TOPIC (the transformer's users topic, read_committed, Avro through the registry)
#    and keeps the latest value per key (a tombstone removes the key: deletions are outside this
#    implementation, so deleted users are counted apart and not compared), then normalizes
#    RAW_TOPIC again (writing nothing) and compares, per user, the latest record of each side on
#    the fields in COMPARED below (provenance and access_group_ids are left out). Prints one JSON
#    line with the counts of users equal / differing / missing on either side, the number of
#    differences per field and up to 5 examples (user key, field, both values; never a whole
#    payload). Exits 1 if any user differs or is missing on either side, or nothing was compared.
#
# Readings of the specification where it leaves room (see the functions below): a string of only
# white space is no id and no part of a display name; "true"/"false" are read as booleans, other
# spellings and numbers where a string is expected are wrongly typed (null); RFC 3339 times may
# separate date and time with a space, may carry a leap second (the last millisecond of second
# 59), and drop digits below the millisecond (towards the past, also before 1970); a JSON
# payload with a lone UTF-16 surrogate escape is invalid. Hand-made edge cases showed the
# transformer differing on some of these (numbers turned into strings, "TRUE" read as true,
# rounding before 1970, an entity_id differing from the payload's id being a dead letter, lone
# surrogates in keys it never reads accepted); the simulator's data has none of them.
#
# Needs: KAFKA_BOOTSTRAP_SERVERS, SCHEMA_REGISTRY_URL (eval "$(deploy/local/up)"); Python 3 with
# confluent-kafka and fastavro (deploy/local/lib.sh's ensure_python_packages).
import time

T0 = time.time()

import argparse
import functools
import io
import json
import os
import re
import resource
import struct
import sys
import urllib.error
import urllib.request
import uuid
from datetime import date

import fastavro
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LOCAL_USER_SCHEMA = os.path.join(ROOT, "schemas", "avro", "user_usage.avsc")
MAX_MESSAGE_BYTES = 1024 * 1024
TRANSACTION_EVENTS = 5000  # the transformer's default batch_max_records
IDLE_TIMEOUT_S = 120.0

# The fields compared with the transformer's records (everything but provenance and groups).
COMPARED = (
    "tenant_id", "environment_id", "user_id", "username", "email", "display_name",
    "can_authenticate", "locality", "mfa_enabled", "region", "status", "enabled",
    "lifecycle_status", "type", "verify_status", "population_id", "identity_provider_type",
    "identity_provider_id", "last_sign_on_at", "created_at", "updated_at",
)


def process_start_time():
    """Wall-clock time at which this process started (from /proc), else this module's import."""
    try:
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        start_ticks = int(fields[19])  # field 22 of proc(5); the list starts at field 3
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return time.time() - (uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return T0


START = min(process_start_time(), T0)


# --------------------------------------------------------------------------------------------
# Schema registry (Confluent API, e.g. Apicurio's /apis/ccompat/v7)

class UnknownSchema(Exception):
    pass


def strip_logical_types(schema):
    """Timestamps stay epoch milliseconds (ints): fastavro would turn them into datetimes."""
    if isinstance(schema, dict):
        return {k: strip_logical_types(v) for k, v in schema.items() if k != "logicalType"}
    if isinstance(schema, list):
        return [strip_logical_types(v) for v in schema]
    return schema


def parse(schema_text):
    return fastavro.parse_schema(strip_logical_types(json.loads(schema_text)), named_schemas={})


class Registry:
    def __init__(self, url):
        self.url = url.rstrip("/")
        self.by_id = {}

    def _call(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", "application/vnd.schemaregistry.v1+json")
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return json.load(resp)
        except urllib.error.HTTPError as e:
            if e.code == 404:
                return None
            raise RuntimeError(f"registry {method} {path}: HTTP {e.code} {e.read()[:300]!r}") from None

    def writer_schema(self, schema_id):
        """The parsed writer schema of an id; UnknownSchema when the registry does not know it."""
        parsed = self.by_id.get(schema_id)
        if parsed is None:
            doc = self._call("GET", f"/schemas/ids/{schema_id}")
            if doc is None:
                raise UnknownSchema(f"schema id {schema_id} unknown to the registry")
            parsed = self.by_id[schema_id] = parse(doc["schema"])
        return parsed

    def latest(self, subject):
        doc = self._call("GET", f"/subjects/{urllib.request.quote(subject, safe='')}/versions/latest")
        return None if doc is None else doc["schema"]

    def register(self, subject, schema_text):
        doc = self._call("POST", f"/subjects/{urllib.request.quote(subject, safe='')}/versions",
                         {"schema": schema_text})
        if doc is None or "id" not in doc:
            raise RuntimeError(f"registry did not register {subject}: {doc!r}")
        return int(doc["id"])


# --------------------------------------------------------------------------------------------
# Reading a topic to its end, read_committed

class TopicReader:
    """Reads every partition of a topic from its start (or committed offsets) to the end it had
    when the reader started; yields lists of messages."""

    def __init__(self, bootstrap, topic, group_id, resume):
        self.topic = topic
        self.consumer = Consumer({
            "bootstrap.servers": bootstrap,
            "group.id": group_id,
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "enable.partition.eof": True,
            "message.max.bytes": MAX_MESSAGE_BYTES,
            "queued.max.messages.kbytes": 16384,
            "fetch.queue.backoff.ms": 10,
        })
        md = self.consumer.list_topics(topic, timeout=10)
        tmd = md.topics.get(topic)
        if tmd is None or tmd.error is not None or not tmd.partitions:
            raise RuntimeError(f"topic {topic} not found ({tmd.error if tmd else 'no metadata'})")
        self.partitions = sorted(tmd.partitions)
        self.ends = {}
        starts = {}
        committed = {}
        if resume:
            for tp in self.consumer.committed(
                    [TopicPartition(topic, p) for p in self.partitions], timeout=10):
                committed[tp.partition] = tp.offset
        for p in self.partitions:
            low, high = self.consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            self.ends[p] = high
            starts[p] = max(committed.get(p, -1), low)
        self.pending = {p for p in self.partitions if starts[p] < self.ends[p]}
        # The next offset to commit per partition: past the last record processed, or the end.
        self.positions = dict(starts)
        self.consumer.assign([TopicPartition(topic, p, starts[p]) for p in self.partitions])

    def batches(self, max_messages):
        idle_since = time.monotonic()
        while self.pending:
            msgs = self.consumer.consume(max_messages, timeout=0.5)
            if not msgs:
                if time.monotonic() - idle_since > IDLE_TIMEOUT_S:
                    raise RuntimeError(f"{self.topic}: no progress for {IDLE_TIMEOUT_S:.0f} s "
                                       f"(partitions not at their end: {sorted(self.pending)})")
                continue
            idle_since = time.monotonic()
            out = []
            for m in msgs:
                err = m.error()
                p = m.partition()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        if m.offset() >= self.ends.get(p, 0):
                            self.positions[p] = max(self.positions[p], self.ends[p])
                            self.pending.discard(p)
                        continue
                    raise KafkaException(err)
                if m.offset() >= self.ends[p]:
                    self.positions[p] = max(self.positions[p], self.ends[p])
                    self.pending.discard(p)
                    continue
                out.append(m)
            if out:
                yield out

    def mark(self, msg):
        self.positions[msg.partition()] = msg.offset() + 1

    def offsets(self):
        return [TopicPartition(self.topic, p, o) for p, o in sorted(self.positions.items())]

    def close(self):
        self.consumer.close()


# --------------------------------------------------------------------------------------------
# Normalization (the specification: user_usage.avsc's docs, transformer/README.md)

class DeadLetter(Exception):
    def __init__(self, kind, message):
        super().__init__(message)
        self.kind = kind


def text(v):
    """A JSON string, else null (absent, null and wrongly typed values)."""
    return v if type(v) is str else None


def boolean(v):
    """A JSON boolean, or the strings "true"/"false"; anything else null."""
    if v is True or v is False:
        return v
    if v == "true" and type(v) is str:
        return True
    if v == "false" and type(v) is str:
        return False
    return None


EMPTY = {}


def obj(v):
    return v if type(v) is dict else EMPTY


# RFC 3339 date-time; the date and time may also be separated by a space (RFC 3339, 5.6, NOTE).
RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(?:([Zz])|([+-])(\d{2}):(\d{2}))\Z",
    re.ASCII)
EPOCH_ORDINAL = date(1970, 1, 1).toordinal()


@functools.lru_cache(maxsize=1 << 16)
def epoch_day(y, m, d):
    return date(y, m, d).toordinal() - EPOCH_ORDINAL  # ValueError for an impossible date


def timestamp_millis(v):
    """An RFC 3339 date-time (with its offset) as epoch milliseconds, else null. Digits below the
    millisecond are dropped (the earlier millisecond, also before 1970). A leap second (second 60,
    RFC 3339 5.7: only at 23:59:60 UTC on the last day of a month) is the last millisecond of
    second 59, which epoch time can represent."""
    if type(v) is not str:
        return None
    m = RFC3339.match(v)
    if m is None:
        return None
    y, mo, d, hh, mi, ss, frac, z, sign, oh, om = m.groups()
    hh, mi, ss = int(hh), int(mi), int(ss)
    if hh > 23 or mi > 59 or ss > 60:
        return None
    try:
        day = epoch_day(int(y), int(mo), int(d))
    except ValueError:
        return None
    offset = 0
    if z is None:
        oh, om = int(oh), int(om)
        if oh > 23 or om > 59:
            return None
        offset = (oh * 60 + om) * 60
        if sign == "-":
            offset = -offset
    if ss == 60:
        utc = day * 86400 + hh * 3600 + mi * 60 + 59 - offset
        utc_day, second_of_day = divmod(utc, 86400)
        if second_of_day != 86399 or date.fromordinal(utc_day + 1 + EPOCH_ORDINAL).day != 1:
            return None
        return utc * 1000 + 999
    ms = int((frac + "00")[:3]) if frac else 0
    return ((day * 86400 + hh * 3600 + mi * 60 + ss) - offset) * 1000 + ms


def reject_constant(name):
    raise ValueError(f"not JSON: {name}")


SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def parse_object(payload):
    """The payload's JSON object. Invalid JSON (NaN and Infinity included, and a \\u escape of
    a lone UTF-16 surrogate anywhere: it is no Unicode text) and other JSON values are errors."""
    try:
        doc = json.loads(payload, parse_constant=reject_constant)
        if SURROGATE_ESCAPE.search(payload) is not None:
            # Escaped pairs were joined into one character; a lone one fails to encode.
            json.dumps(doc, ensure_ascii=False).encode("utf-8")
    except (ValueError, RecursionError) as e:
        raise DeadLetter("normalize", f"invalid JSON: {str(e)[:80]}") from None
    if type(doc) is not dict:
        raise DeadLetter("normalize", "payload is not a JSON object")
    return doc


def present(v):
    """A string with more than white space in it, else None."""
    return v if type(v) is str and not v.isspace() and v != "" else None


def display_name(name):
    """'formatted', else 'given' and 'family' joined by a space; a part that is empty or only
    white space counts as absent (kept verbatim otherwise)."""
    formatted = present(name.get("formatted"))
    if formatted is not None:
        return formatted
    parts = [p for p in (present(name.get("given")), present(name.get("family"))) if p is not None]
    return " ".join(parts) if parts else None


def normalize_user(raw, doc):
    """The UserUsage record of one user event's JSON object (raw: the decoded envelope)."""
    user_id = present(doc.get("id"))
    if user_id is None:  # missing, not a string, empty or only white space
        raise DeadLetter("normalize", "user without an id")
    account = obj(doc.get("account"))
    address = obj(doc.get("address"))
    idp = obj(doc.get("identityProvider"))
    return {
        "tenant_id": raw["tenant_id"],
        "environment_id": raw["environment_id"],
        "user_id": user_id,
        "username": text(doc.get("username")),
        "email": text(doc.get("email")),
        "display_name": display_name(obj(doc.get("name"))),
        "can_authenticate": boolean(account.get("canAuthenticate")),
        "locality": text(address.get("locality")),
        "mfa_enabled": boolean(doc.get("mfaEnabled")),
        "region": text(address.get("region")),
        "status": text(account.get("status")),
        "enabled": boolean(doc.get("enabled")),
        "lifecycle_status": text(obj(doc.get("lifecycle")).get("status")),
        "type": text(doc.get("type")),
        "verify_status": text(doc.get("verifyStatus")),
        "population_id": text(obj(doc.get("population")).get("id")),
        "identity_provider_type": text(idp.get("type")),
        "identity_provider_id": text(idp.get("id")),
        "last_sign_on_at": timestamp_millis(obj(doc.get("lastSignOn")).get("at")),
        "created_at": timestamp_millis(doc.get("createdAt")),
        "updated_at": timestamp_millis(doc.get("updatedAt")),
        "access_group_ids": [],
        "sync_id": raw.get("sync_id"),
        "source_topic": "",
        "source_partition": 0,
        "source_offset": 0,
        "observed_at": raw["observed_at"],
    }


class SyncState:
    """Per tenant: the sync in progress, the groups its applications name, the access groups of
    each member and the events of each kind seen (for the sync_completed check)."""

    def __init__(self, sync_id):
        self.sync_id = sync_id
        self.access_groups = set()
        self.members = {}
        self.counts = {}


class Normalizer:
    """Raw records in, UserUsage records out; counts kinds and dead letters."""

    def __init__(self, registry, topic):
        self.registry = registry
        self.topic = topic
        self.events = 0
        self.users = 0
        self.dead_letters = {}
        self.kinds = {}
        self.syncs = {}

    def dead(self, kind):
        self.dead_letters[kind] = self.dead_letters.get(kind, 0) + 1

    def decode(self, msg):
        value = msg.value()
        if value is None or len(value) < 5 or value[0] != 0:
            raise DeadLetter("wire", "not in the Confluent wire format")
        try:
            schema = self.registry.writer_schema(struct.unpack_from(">I", value, 1)[0])
        except UnknownSchema as e:
            raise DeadLetter("schema", str(e)) from None
        buf = io.BytesIO(value)
        buf.seek(5)
        try:
            raw = fastavro.schemaless_reader(buf, schema, None)
        except Exception as e:  # truncated or invalid datum
            raise DeadLetter("avro", f"not a raw event datum: {type(e).__name__}") from None
        if buf.tell() != len(value):
            raise DeadLetter("avro", "bytes after the raw event datum")
        if type(raw) is not dict or "kind" not in raw or "tenant_id" not in raw:
            raise DeadLetter("avro", "not a raw event")
        key = msg.key()
        if key is None or key != raw["tenant_id"].encode():
            raise DeadLetter("key", "key names another tenant than the envelope")
        return raw

    def process(self, msg):
        """The UserUsage record of a raw record, or None for other kinds and dead letters."""
        self.events += 1
        try:
            raw = self.decode(msg)
        except DeadLetter as e:
            self.dead(e.kind)
            return None
        kind = raw["kind"]
        self.kinds[kind] = self.kinds.get(kind, 0) + 1
        tenant = raw["tenant_id"]
        sync = self.syncs.get(tenant)
        if sync is not None and raw.get("sync_id") == sync.sync_id and kind in (
                "user", "group", "group_membership", "application"):
            sync.counts[kind] = sync.counts.get(kind, 0) + 1
        if kind == "user":
            try:
                rec = normalize_user(raw, parse_object(raw["payload"]))
            except DeadLetter as e:
                self.dead(e.kind)
                return None
            if sync is not None and raw.get("sync_id") == sync.sync_id:
                groups = sync.members.get(rec["user_id"])
                if groups:
                    rec["access_group_ids"] = sorted(groups)
            rec["source_topic"] = self.topic
            rec["source_partition"] = msg.partition()
            rec["source_offset"] = msg.offset()
            self.users += 1
            return rec
        if kind == "sync_started":
            self.syncs[tenant] = SyncState(raw.get("sync_id"))
        elif kind == "application":
            if sync is not None and raw.get("sync_id") == sync.sync_id:
                try:
                    doc = parse_object(raw["payload"])
                except DeadLetter:
                    return None
                groups = obj(obj(doc.get("accessControl")).get("group")).get("groups")
                if type(groups) is list:
                    for g in groups:
                        gid = text(obj(g).get("id"))
                        if gid:
                            sync.access_groups.add(gid)
        elif kind == "group_membership":
            if sync is not None and raw.get("sync_id") == sync.sync_id:
                group_id, _, user_id = (raw.get("entity_id") or "").partition("/")
                if group_id in sync.access_groups and user_id:
                    sync.members.setdefault(user_id, set()).add(group_id)
        elif kind == "oversized":
            self.dead("oversized")
            try:
                original = text(obj(json.loads(raw["payload"])).get("kind"))
            except ValueError:
                original = None
            if original and sync is not None and raw.get("sync_id") == sync.sync_id:
                sync.counts[original] = sync.counts.get(original, 0) + 1
        elif kind == "sync_completed":
            if sync is None or raw.get("sync_id") != sync.sync_id:
                self.dead("sync_unverified")
            else:
                try:
                    counts = obj(obj(json.loads(raw["payload"])).get("counts"))
                except ValueError:
                    counts = None
                seen = {k: v for k, v in sync.counts.items() if v}
                told = {k: v for k, v in (counts or {}).items() if v}
                if counts is None or seen != told:
                    self.dead("sync_mismatch")
                del self.syncs[tenant]
        return None


# --------------------------------------------------------------------------------------------
# Run: raw topic -> UserUsage records, exactly once

def user_schema_text(registry, subject):
    if subject:
        text_ = registry.latest(subject)
        if text_ is not None:
            return text_, f"registry subject {subject}"
    with open(LOCAL_USER_SCHEMA) as f:
        return f.read(), LOCAL_USER_SCHEMA


def ensure_topic(bootstrap, topic, partitions):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    existing = admin.list_topics(timeout=10).topics.get(topic)
    if existing is not None and not existing.error:
        if len(existing.partitions) < partitions:
            raise RuntimeError(f"{topic} has {len(existing.partitions)} partitions, "
                               f"the raw topic {partitions}")
        return
    futures = admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1,
                                            config={"cleanup.policy": "compact",
                                                    "max.message.bytes": str(MAX_MESSAGE_BYTES)})])
    for f in futures.values():
        try:
            f.result()
        except KafkaException as e:
            if e.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise


def figures(events):
    t = os.times()
    cpu = t.user + t.system
    wall = time.time() - START
    return {
        "seconds": round(wall, 3),
        "cpu_seconds": round(cpu, 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "events_per_s": round(events / wall, 1) if wall > 0 else None,
        "cpu_us_per_event": round(cpu * 1e6 / events, 2) if events else None,
    }


def run(args, bootstrap, registry):
    schema_text, schema_source = user_schema_text(registry, args.schema_subject)
    schema = parse(schema_text)
    schema_id = registry.register(f"{args.output_topic}-value", schema_text)
    header = b"\x00" + struct.pack(">I", schema_id)

    group_id = args.group_id or f"independent-{args.output_topic}"
    reader = TopicReader(bootstrap, args.raw_topic, group_id, resume=True)
    ensure_topic(bootstrap, args.output_topic, len(reader.partitions))

    delivery_errors = []

    def on_delivery(err, _msg):
        if err is not None:
            delivery_errors.append(str(err))

    producer = Producer({
        "bootstrap.servers": bootstrap,
        "transactional.id": args.transactional_id or f"independent-{args.output_topic}",
        "transaction.timeout.ms": 60000,
        "compression.type": "lz4",
        "linger.ms": 5,
        "message.max.bytes": MAX_MESSAGE_BYTES,
        "on_delivery": on_delivery,
    })
    producer.init_transactions(30)
    norm = Normalizer(registry, args.raw_topic)
    out_topic = args.output_topic
    transactions = 0
    in_txn = 0
    buf = io.BytesIO()
    write = fastavro.schemaless_writer

    def commit():
        nonlocal transactions, in_txn
        producer.send_offsets_to_transaction(reader.offsets(),
                                             reader.consumer.consumer_group_metadata(), 30)
        producer.commit_transaction(60)
        if delivery_errors:
            raise RuntimeError(f"{len(delivery_errors)} records not delivered: {delivery_errors[0]}")
        transactions += 1
        in_txn = 0

    producer.begin_transaction()
    for batch in reader.batches(TRANSACTION_EVENTS):
        for msg in batch:
            rec = norm.process(msg)
            if rec is not None:
                buf.seek(0)
                buf.truncate()
                buf.write(header)
                write(buf, schema, rec)
                producer.produce(out_topic, buf.getvalue(),
                                 f"{rec['tenant_id']}/{rec['user_id']}".encode(),
                                 partition=msg.partition())
            reader.mark(msg)
            in_txn += 1
            if in_txn >= TRANSACTION_EVENTS:
                commit()
                producer.begin_transaction()
        producer.poll(0)
    commit()  # the rest, and the offsets up to each partition's end
    producer.flush(30)
    reader.close()
    summary = {
        "mode": "run",
        "raw_topic": args.raw_topic,
        "output_topic": out_topic,
        "schema": schema_source,
        "schema_id": schema_id,
        "events": norm.events,
        "users_written": norm.users,
        "dead_letters": sum(norm.dead_letters.values()),
        "dead_letter_kinds": norm.dead_letters,
        "kinds": norm.kinds,
        "transactions": transactions,
    }
    summary.update(figures(norm.events))
    print(json.dumps(summary), flush=True)
    return 0


# --------------------------------------------------------------------------------------------
# Compare: the transformer's users topic against this normalization of the same raw topic

def compare(args, bootstrap, registry):
    pick = COMPARED
    interned = {}

    def intern(v):
        return interned.setdefault(v, v) if type(v) is str else v

    # Fields with few distinct values share their strings, to keep the dict small.
    shared = {"tenant_id", "environment_id", "status", "lifecycle_status", "type", "verify_status",
              "population_id", "identity_provider_type", "identity_provider_id", "locality",
              "region"}

    def values(rec):
        return tuple(intern(rec.get(f)) if f in shared else rec.get(f) for f in pick)

    theirs = {}
    tombstoned = set()
    bad_records = 0
    group = f"independent-compare-{uuid.uuid4()}"
    reader = TopicReader(bootstrap, args.compare, group, resume=False)
    transformer_records = 0
    for batch in reader.batches(5000):
        for msg in batch:
            transformer_records += 1
            key = msg.key().decode() if msg.key() is not None else None
            value = msg.value()
            if value is None:
                theirs.pop(key, None)
                tombstoned.add(key)
                continue
            try:
                if len(value) < 5 or value[0] != 0:
                    raise ValueError("not in the wire format")
                schema = registry.writer_schema(struct.unpack_from(">I", value, 1)[0])
                buf = io.BytesIO(value)
                buf.seek(5)
                rec = fastavro.schemaless_reader(buf, schema, None)
            except (UnknownSchema, ValueError, EOFError, IndexError, TypeError, struct.error) as e:
                bad_records += 1
                print(f"transformer record {msg.partition()}:{msg.offset()} unreadable: {e}",
                      file=sys.stderr)
                continue
            tombstoned.discard(key)
            theirs[key] = values(rec)
    reader.close()

    # Per key, the latest result of this side: None when equal, else this side's values.
    mine = {}
    norm = Normalizer(registry, args.raw_topic)
    reader = TopicReader(bootstrap, args.raw_topic, group, resume=False)
    for batch in reader.batches(5000):
        for msg in batch:
            rec = norm.process(msg)
            if rec is None:
                continue
            key = f"{rec['tenant_id']}/{rec['user_id']}"
            mine_values = values(rec)
            mine[key] = None if theirs.get(key) == mine_values else mine_values
    reader.close()

    equal = differing = missing_in_transformer = deleted = 0
    field_differences = {}
    examples = []
    for key in sorted(mine):
        result = mine[key]
        if key not in theirs:
            if key in tombstoned:
                deleted += 1
                continue
            missing_in_transformer += 1
            if len(examples) < 5:
                examples.append({"user": key, "missing_in": "transformer"})
            continue
        if result is None:
            equal += 1
            continue
        differing += 1
        for name, a, b in zip(pick, result, theirs[key]):
            if a != b or type(a) is not type(b):
                field_differences[name] = field_differences.get(name, 0) + 1
                if len(examples) < 5:
                    examples.append({"user": key, "field": name, "independent": a,
                                     "transformer": b})
    missing_in_independent = sorted(k for k in theirs if k not in mine)
    for key in missing_in_independent[:max(0, 5 - len(examples))]:
        examples.append({"user": key, "missing_in": "independent"})
    agree = (differing == 0 and missing_in_transformer == 0 and not missing_in_independent
             and equal > 0 and bad_records == 0)
    summary = {
        "mode": "compare",
        "raw_topic": args.raw_topic,
        "users_topic": args.compare,
        "fields": list(pick),
        "transformer_records": transformer_records,
        "transformer_users": len(theirs),
        "transformer_unreadable": bad_records,
        "independent_users": len(mine),
        "equal": equal,
        "differing": differing,
        "missing_in_transformer": missing_in_transformer,
        "missing_in_independent": len(missing_in_independent),
        "deleted_by_transformer_not_compared": deleted,
        "field_differences": field_differences,
        "examples": examples,
        "raw_events": norm.events,
        "dead_letters": sum(norm.dead_letters.values()),
        "agree": agree,
    }
    summary.update(figures(norm.events + transformer_records))
    print(json.dumps(summary), flush=True)
    return 0 if agree else 1


def main():
    ap = argparse.ArgumentParser(
        description="Independent Python implementation of the transformer's user normalization "
                    "(see the comment at the top of this file).")
    ap.add_argument("raw_topic")
    ap.add_argument("output_topic", nargs="?",
                    help="where the UserUsage records go (run mode)")
    ap.add_argument("--compare", metavar="USERS_TOPIC",
                    help="compare the transformer's users topic with this normalization instead")
    ap.add_argument("--schema-subject", default="usage.users.v1-value",
                    help="registry subject whose latest schema encodes the records "
                         "(default usage.users.v1-value; schemas/avro/user_usage.avsc if absent)")
    ap.add_argument("--group-id", help="consumer group (default independent-<output topic>)")
    ap.add_argument("--transactional-id", help="default independent-<output topic>")
    ap.add_argument("--bootstrap-servers", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS"))
    ap.add_argument("--schema-registry-url", default=os.environ.get("SCHEMA_REGISTRY_URL"))
    args = ap.parse_args()
    if not args.bootstrap_servers or not args.schema_registry_url:
        ap.error('KAFKA_BOOTSTRAP_SERVERS and SCHEMA_REGISTRY_URL must be set '
                 '(eval "$(deploy/local/up)")')
    if bool(args.compare) == bool(args.output_topic):
        ap.error("give either OUTPUT_TOPIC or --compare USERS_TOPIC")
    registry = Registry(args.schema_registry_url)
    if args.compare:
        return compare(args, args.bootstrap_servers, registry)
    return run(args, args.bootstrap_servers, registry)


if __name__ == "__main__":
    sys.exit(main())
