#!/usr/bin/env python3
"""JSON schemas for kubeconform, made offline (used by deploy/helm/check; see deploy/helm/README.md).

Two commands:

  schemas.py k8s SRC_DIR OUT_DIR
      SRC_DIR is one Kubernetes version's strict schemas as the PyPI package kubernetes-validate
      ships them (kubernetes_validate/kubernetes-json-schema/v1.33.0-local-strict): one file per
      type, `<kind>-<group>-<version>.json`, whose `$ref`s point into a shared `_definitions.json`.
      Writes kubeconform's standalone layout: one file per kind (the same names), each carrying
      only the definitions it reaches under its own `$defs`, so a file validates on its own.
      The strict variant already closes every object (`additionalProperties: false`), which is
      what makes `kubeconform -strict` reject unknown fields.

  schemas.py crd OUT_DIR CRD.yaml[@VERSION,...] ...
      Derives one schema per served version of each CustomResourceDefinition from its
      `openAPIV3Schema`, named `<kind>-<group>-<version>.json` (kubeconform's
      `{{ .ResourceKind }}-{{ .Group }}-{{ .ResourceAPIVersion }}.json`), strict like
      openapi2jsonschema's `--strict`: objects with `properties` and no `additionalProperties`
      or `x-kubernetes-preserve-unknown-fields` get `additionalProperties: false`. `@v1beta2`
      restricts a file to the listed versions. Needs PyYAML; its output is committed
      (deploy/helm/schemas/), because CI cannot fetch the CRDs.
"""

import json
import os
import sys

DEFS_FILE = "_definitions.json"


def refs_in(node, found, in_names=False):
    """Collects the definition names `node` references ($ref values), skipping property names."""
    if isinstance(node, dict):
        for key, value in node.items():
            if not in_names and key == "$ref" and isinstance(value, str):
                found.add(value.rsplit("/", 1)[-1])
                continue
            # Keys of these maps are names (a property may be called "$ref"), not keywords.
            walk_names = not in_names and key in ("properties", "patternProperties", "$defs")
            refs_in(value, found, walk_names)
    elif isinstance(node, list):
        for item in node:
            refs_in(item, found)


def rewrite_refs(node, in_names=False):
    """`/api/_definitions.json#/$defs/X` and `#/$defs/X` both become the local `#/$defs/X`."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if not in_names and key == "$ref" and isinstance(value, str):
                out[key] = "#/$defs/" + value.rsplit("/", 1)[-1]
            else:
                walk_names = not in_names and key in ("properties", "patternProperties", "$defs")
                out[key] = rewrite_refs(value, walk_names)
        return out
    if isinstance(node, list):
        return [rewrite_refs(item) for item in node]
    return node


def k8s(src, out):
    with open(os.path.join(src, DEFS_FILE)) as f:
        defs = json.load(f)["$defs"]
    os.makedirs(out, exist_ok=True)
    written = 0
    for name in sorted(os.listdir(src)):
        if not name.endswith(".json") or name in (DEFS_FILE, "all.json"):
            continue
        with open(os.path.join(src, name)) as f:
            schema = json.load(f)
        props = schema.get("properties", {})
        # Only resources (they have apiVersion and kind), not their parts: kubeconform looks
        # schemas up by a document's kind.
        if "kind" not in props or "apiVersion" not in props:
            continue
        closure, todo = set(), set()
        refs_in(schema, todo)
        while todo:
            ref = todo.pop()
            if ref in closure:
                continue
            if ref not in defs:
                sys.exit(f"schemas.py: {name} references {ref}, which {DEFS_FILE} lacks")
            closure.add(ref)
            refs_in(defs[ref], todo)
        schema.pop("$id", None)
        schema = rewrite_refs(schema)
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["$defs"] = {ref: rewrite_refs(defs[ref]) for ref in sorted(closure)}
        with open(os.path.join(out, name), "w") as f:
            json.dump(schema, f, separators=(",", ":"), sort_keys=True)
        written += 1
    if written == 0:
        sys.exit(f"schemas.py: no resource schemas in {src}")
    print(f"schemas.py: {written} standalone resource schemas in {out}")


def strict(node):
    """openAPIV3Schema -> JSON schema: closed objects, nullable, int-or-string."""
    if isinstance(node, list):
        return [strict(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key in ("properties", "patternProperties"):
            out[key] = {name: strict(sub) for name, sub in value.items()}
        else:
            out[key] = strict(value)
    if out.pop("x-kubernetes-int-or-string", False):
        for key in ("type", "format"):
            out.pop(key, None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if out.pop("nullable", False) and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    open_ended = out.get("x-kubernetes-preserve-unknown-fields") is True
    if "properties" in out and "additionalProperties" not in out and not open_ended:
        out["additionalProperties"] = False
    # Descriptions are for people reading the CRD; dropping them keeps the committed files small.
    out.pop("description", None)
    return out


def crd(out, specs):
    import yaml  # only this command needs it

    os.makedirs(out, exist_ok=True)
    for spec in specs:
        path, _, only = spec.partition("@")
        wanted = set(filter(None, only.split(",")))
        with open(path) as f:
            docs = [d for d in yaml.safe_load_all(f) if d and d.get("kind") == "CustomResourceDefinition"]
        if not docs:
            sys.exit(f"schemas.py: no CustomResourceDefinition in {path}")
        for doc in docs:
            group = doc["spec"]["group"]
            kind = doc["spec"]["names"]["kind"]
            found = set()
            for version in doc["spec"]["versions"]:
                name = version["name"]
                if (wanted and name not in wanted) or not version.get("served", True):
                    continue
                found.add(name)
                schema = strict(version["schema"]["openAPIV3Schema"])
                props = schema.setdefault("properties", {})
                props["apiVersion"] = {"type": "string", "enum": [f"{group}/{name}"]}
                props["kind"] = {"type": "string", "enum": [kind]}
                # The API server checks metadata against ObjectMeta, not the CRD's schema: only
                # the fields a chart sets are typed here, others pass.
                strings = {"type": "object", "additionalProperties": {"type": "string"}}
                props["metadata"] = {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string"},
                        "namespace": {"type": "string"},
                        "labels": strings,
                        "annotations": strings,
                    },
                }
                schema["additionalProperties"] = False
                schema["$schema"] = "http://json-schema.org/draft-07/schema#"
                target = os.path.join(out, f"{kind.lower()}-{group}-{name}.json")
                with open(target, "w") as f:
                    json.dump(schema, f, separators=(",", ":"), sort_keys=True)
                    f.write("\n")
                print(f"schemas.py: {target}")
            if wanted - found:
                sys.exit(f"schemas.py: {path} serves no version {sorted(wanted - found)} of {kind}")


def main(argv):
    if len(argv) == 4 and argv[1] == "k8s":
        k8s(argv[2], argv[3])
    elif len(argv) >= 4 and argv[1] == "crd":
        crd(argv[2], argv[3:])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
