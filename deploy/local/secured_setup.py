"""deploy/local/secured_setup.py: the secured local broker's topics and ACLs, from the Strimzi files.

deploy/local/up --secured runs it as the broker's admin user once the broker is up. It does what
Strimzi's topic and user operators do with the chart's resources:

- every KafkaTopic of files/strimzi/kafka-topics.yaml is created with its partitions and configs
  (one replica and min.insync.replicas=1 here: one node);
- every KafkaUser of files/strimzi/kafka-users.yaml gets exactly its ACLs: the user's existing ACLs
  are deleted first, so a rerun after an edit leaves no stale grant. (Its SCRAM credentials were
  created when the storage was formatted.)

Usage: secured_setup.py BOOTSTRAP CA_FILE ADMIN_PASSWORD_FILE STRIMZI_DIR
Needs confluent-kafka and PyYAML (deploy/local/lib.sh ensure_python_packages).
"""

import sys

import yaml
from confluent_kafka import KafkaException
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    NewTopic,
    ResourcePatternType,
    ResourceType,
)

RESOURCE_TYPES = {
    "topic": ResourceType.TOPIC,
    "group": ResourceType.GROUP,
    "transactionalId": ResourceType.TRANSACTIONAL_ID,
    "cluster": ResourceType.BROKER,
}
PATTERN_TYPES = {"literal": ResourcePatternType.LITERAL, "prefix": ResourcePatternType.PREFIXED}
OPERATIONS = {
    "All": AclOperation.ALL,
    "Read": AclOperation.READ,
    "Write": AclOperation.WRITE,
    "Create": AclOperation.CREATE,
    "Delete": AclOperation.DELETE,
    "Alter": AclOperation.ALTER,
    "Describe": AclOperation.DESCRIBE,
    "ClusterAction": AclOperation.CLUSTER_ACTION,
    "DescribeConfigs": AclOperation.DESCRIBE_CONFIGS,
    "AlterConfigs": AclOperation.ALTER_CONFIGS,
    "IdempotentWrite": AclOperation.IDEMPOTENT_WRITE,
}
TIMEOUT_S = 60


def documents(path, kind):
    with open(path, encoding="utf-8") as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    wrong = [d.get("kind") for d in docs if d.get("kind") != kind]
    if wrong:
        sys.exit(f"{path}: expected only {kind} documents, found {wrong}")
    return docs


def create_topics(admin, topics):
    wanted = []
    for t in topics:
        spec = t["spec"]
        config = {k: str(v) for k, v in (spec.get("config") or {}).items()}
        config["min.insync.replicas"] = "1"
        wanted.append(NewTopic(spec.get("topicName", t["metadata"]["name"]), spec["partitions"], 1, config=config))
    created = 0
    for name, future in admin.create_topics(wanted, request_timeout=TIMEOUT_S).items():
        try:
            future.result()
            created += 1
        except KafkaException as e:
            if e.args[0].name() != "TOPIC_ALREADY_EXISTS":
                sys.exit(f"creating topic {name}: {e}")
    return created


def bindings(user):
    principal = f"User:{user['metadata']['name']}"
    out = []
    for acl in user["spec"]["authorization"]["acls"]:
        r = acl["resource"]
        rtype = RESOURCE_TYPES[r["type"]]
        name = "kafka-cluster" if r["type"] == "cluster" else r["name"]
        pattern = PATTERN_TYPES[r.get("patternType", "literal")]
        for op in acl["operations"]:
            out.append(
                AclBinding(rtype, name, pattern, principal, acl.get("host", "*"), OPERATIONS[op], AclPermissionType.ALLOW)
            )
    return principal, out


def apply_acls(admin, users):
    total = 0
    for user in users:
        principal, wanted = bindings(user)
        stale = AclBindingFilter(
            ResourceType.ANY, None, ResourcePatternType.ANY, principal, None, AclOperation.ANY, AclPermissionType.ANY
        )
        for future in admin.delete_acls([stale], request_timeout=TIMEOUT_S).values():
            future.result()
        for binding, future in admin.create_acls(wanted, request_timeout=TIMEOUT_S).items():
            try:
                future.result()
            except KafkaException as e:
                sys.exit(f"creating ACL {binding}: {e}")
        total += len(wanted)
    return total


def main():
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    bootstrap, ca_file, password_file, strimzi = sys.argv[1:]
    with open(password_file, encoding="utf-8") as f:
        password = f.read().strip()
    admin = AdminClient(
        {
            "bootstrap.servers": bootstrap,
            "security.protocol": "SASL_SSL",
            "sasl.mechanisms": "SCRAM-SHA-512",
            "sasl.username": "admin",
            "sasl.password": password,
            "ssl.ca.location": ca_file,
        }
    )
    topics = documents(f"{strimzi}/kafka-topics.yaml", "KafkaTopic")
    users = documents(f"{strimzi}/kafka-users.yaml", "KafkaUser")
    created = create_topics(admin, topics)
    acls = apply_acls(admin, users)
    names = ", ".join(u["metadata"]["name"] for u in users)
    print(f"{len(topics)} topics ({created} created), {acls} ACLs for {names}", file=sys.stderr)


if __name__ == "__main__":
    main()
