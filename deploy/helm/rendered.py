#!/usr/bin/env python3
"""Checks of `helm template` output beyond its schemas (used by deploy/helm/check).

  rendered.py configs RENDERED.yaml WORKDIR [BIN_DIR]
      Every Deployment's config.toml (from the ConfigMap it mounts) must parse as TOML. With
      BIN_DIR (holding the built producer, transformer and lake-sink), each is also checked by its
      own binary, `<binary> validate-config`, with the Deployment's environment: variables from
      Secrets get a placeholder value, so the override names (`PRODUCER__KAFKA__…`) are checked
      too, tenants' client_secret_file point at a placeholder file, and a schema_registry.ca_location
      at a test CA certificate.

  rendered.py strimzi RENDERED.yaml CHART_DIR CLUSTER
      Every KafkaTopic of files/strimzi/kafka-topics.yaml and KafkaUser of kafka-users.yaml must be
      rendered, with the same spec, the label strimzi.io/cluster=CLUSTER and a namespace.

Prints one line of counts; exits 1 with the reasons when a check fails.
"""

import os
import subprocess
import sys

import yaml

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11
    import tomli as tomllib


# A PEM certificate for `schema_registry.ca_location` (the test CA of pipeline-io's tests).
PLACEHOLDER_CA = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..", "pipeline-io", "tests", "fixtures", "registry-ca.pem"
)


def documents(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def configs(rendered, workdir, bin_dir):
    docs = documents(rendered)
    maps = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ConfigMap"}
    deployments = [d for d in docs if d["kind"] == "Deployment"]
    problems, parsed, validated = [], 0, 0
    os.makedirs(workdir, exist_ok=True)
    secret_file = os.path.join(workdir, "placeholder-secret")
    with open(secret_file, "w") as f:
        f.write("placeholder\n")
    for deployment in deployments:
        name = deployment["metadata"]["name"]
        pod = deployment["spec"]["template"]["spec"]
        container = pod["containers"][0]
        volume = next((v for v in pod.get("volumes", []) if v["name"] == "config"), None)
        if volume is None or volume.get("configMap", {}).get("name") not in maps:
            problems.append(f"{name}: no ConfigMap mounted as its configuration")
            continue
        text = maps[volume["configMap"]["name"]]["data"]["config.toml"]
        try:
            config = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            problems.append(f"{name}: config.toml is not TOML: {e}")
            continue
        parsed += 1
        if not bin_dir:
            continue
        path = os.path.join(workdir, f"{name}.toml")
        with open(path, "w") as f:
            f.write(text)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        for var in container.get("env", []):
            env[var["name"]] = var.get("value", "placeholder-from-a-secret")
        for tenant in config.get("tenants", []):
            if "client_secret_file" in tenant:
                env[f"PRODUCER__TENANTS__{tenant['tenant_id']}__CLIENT_SECRET_FILE"] = secret_file
        if "ca_location" in config.get("schema_registry", {}):
            # The mounted CA is not here: the binary reads a test CA in its place.
            prefix = container["name"].upper().replace("-", "_")
            env[f"{prefix}__SCHEMA_REGISTRY__CA_LOCATION"] = PLACEHOLDER_CA
        binary = os.path.join(bin_dir, container["name"])
        run = subprocess.run(
            [binary, "validate-config", "--config", path],
            env=env, capture_output=True, text=True, timeout=60,
        )
        if run.returncode != 0:
            problems.append(f"{name}: {container['name']} validate-config failed: {run.stdout}{run.stderr}".strip())
        else:
            validated += 1
    line = f"{len(deployments)} deployments, {parsed} configs parse as TOML"
    if bin_dir:
        line += f", {validated} accepted by `<binary> validate-config`"
    return line, problems


def strimzi(rendered, chart, cluster):
    docs = documents(rendered)
    problems, wanted = [], 0
    for name in ("kafka-topics.yaml", "kafka-users.yaml"):
        for expected in documents(os.path.join(chart, "files", "strimzi", name)):
            wanted += 1
            kind, resource = expected["kind"], expected["metadata"]["name"]
            found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == resource]
            if len(found) != 1:
                problems.append(f"{kind} {resource}: rendered {len(found)} times, expected once")
                continue
            got = found[0]
            label = got["metadata"].get("labels", {}).get("strimzi.io/cluster")
            if label != cluster:
                problems.append(f"{kind} {resource}: label strimzi.io/cluster is {label!r}, expected {cluster!r}")
            if not got["metadata"].get("namespace"):
                problems.append(f"{kind} {resource}: no namespace")
            if got.get("spec") != expected.get("spec"):
                problems.append(f"{kind} {resource}: spec differs from files/strimzi/{name}")
    extra = [d for d in docs if d["kind"] in ("KafkaTopic", "KafkaUser")]
    if len(extra) != wanted:
        problems.append(f"{len(extra)} KafkaTopic/KafkaUser rendered, the files hold {wanted}")
    return f"{wanted} Strimzi resources of files/strimzi/ rendered with strimzi.io/cluster={cluster}", problems


def main(argv):
    if len(argv) in (4, 5) and argv[1] == "configs":
        line, problems = configs(argv[2], argv[3], argv[4] if len(argv) == 5 else "")
    elif len(argv) == 5 and argv[1] == "strimzi":
        line, problems = strimzi(argv[2], argv[3], argv[4])
    else:
        sys.exit(__doc__)
    for problem in problems:
        print(f"  {problem}", file=sys.stderr)
    print(line)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main(sys.argv)
