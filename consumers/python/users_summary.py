"""Example consumer of the normalized users topic, in Python with confluent-kafka.

Reads <prefix>users.v1 from the beginning to its current end (read_committed, offsets never
committed), decodes each value with confluent-kafka's AvroDeserializer (writer schema fetched
from the registry by id), keeps the latest record per key (a tombstone removes the user) and
prints one line per tenant, the same lines as the Rust example consumers/users-summary:

    tenant=acme users=1000 can_authenticate=950 mfa_enabled=700 never_signed_on=120

Usage: python3 users_summary.py [TOPIC]   (default usage.users.v1), with KAFKA_BOOTSTRAP_SERVERS
and SCHEMA_REGISTRY_URL set (eval "$(deploy/local/up)"). Needs: pip install -r requirements.txt
"""

import os
import sys
from collections import defaultdict

from confluent_kafka import Consumer, KafkaError, TopicPartition
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext


def main() -> int:
    topic = sys.argv[1] if len(sys.argv) > 1 else "usage.users.v1"
    # The client waits for ever by default: a registry that stops answering (as Apicurio does
    # while its storage consumer is stuck) would hang this script. 10 s per request, asked
    # again up to 3 times, then it fails saying so.
    registry = SchemaRegistryClient({
        "url": os.environ["SCHEMA_REGISTRY_URL"],
        "timeout": 10,
        "max.retries": 3,
    })
    deserialize = AvroDeserializer(registry)
    consumer = Consumer({
        "bootstrap.servers": os.environ["KAFKA_BOOTSTRAP_SERVERS"],
        "group.id": "users-summary-example-py",
        "isolation.level": "read_committed",
        "enable.auto.commit": False,
        "enable.partition.eof": True,
    })
    metadata = consumer.list_topics(topic, timeout=10)
    if topic not in metadata.topics or not metadata.topics[topic].partitions:
        print(f"topic {topic} not found", file=sys.stderr)
        return 1
    partitions = list(metadata.topics[topic].partitions)
    # OFFSET_BEGINNING: every record, as the Rust example reads them.
    consumer.assign([TopicPartition(topic, p, -2) for p in partitions])

    latest = {}
    open_partitions = len(partitions)
    while open_partitions > 0:
        message = consumer.poll(10)
        if message is None:
            print("no answer from the broker within 10 s", file=sys.stderr)
            return 1
        if message.error():
            if message.error().code() == KafkaError._PARTITION_EOF:
                open_partitions -= 1
                continue
            raise RuntimeError(message.error())
        key = message.key().decode()
        if message.value() is None:
            latest[key] = None  # a tombstone: the user was deleted
            continue
        user = deserialize(message.value(), SerializationContext(topic, MessageField.VALUE))
        latest[key] = user
    consumer.close()

    tenants = defaultdict(lambda: [0, 0, 0, 0])
    for user in latest.values():
        if user is None:
            continue
        t = tenants[user["tenant_id"]]
        t[0] += 1
        t[1] += user["can_authenticate"] is True
        t[2] += user["mfa_enabled"] is True
        t[3] += user["last_sign_on_at"] is None
    for tenant in sorted(tenants):
        users, auth, mfa, never = tenants[tenant]
        print(f"tenant={tenant} users={users} can_authenticate={auth} "
              f"mfa_enabled={mfa} never_signed_on={never}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
