#!/usr/bin/env python3
"""Independent Avro decoder for the transformer's integration tests.

Reads a JSON array of {"key": str, "value_hex": str} (Confluent-framed values) on stdin, fetches
each writer schema by id from the Confluent-compatible registry given as the first argument
(GET <url>/schemas/ids/<id>), decodes the datum with fastavro, and prints a JSON array of
{"key": str, "schema_id": int, "record": {...}} on stdout. Needs `pip install fastavro`.
"""
import io
import json
import struct
import sys
import urllib.request

import fastavro


def main() -> None:
    registry = sys.argv[1].rstrip("/")
    schemas = {}
    out = []
    for item in json.load(sys.stdin):
        raw = bytes.fromhex(item["value_hex"])
        if len(raw) < 5 or raw[0] != 0:
            raise SystemExit(f"value of {item['key']} is not in the Confluent wire format")
        (schema_id,) = struct.unpack(">I", raw[1:5])
        if schema_id not in schemas:
            with urllib.request.urlopen(f"{registry}/schemas/ids/{schema_id}", timeout=10) as resp:
                text = json.load(resp)["schema"]
            schemas[schema_id] = fastavro.parse_schema(json.loads(text))
        record = fastavro.schemaless_reader(io.BytesIO(raw[5:]), schemas[schema_id])
        out.append({"key": item["key"], "schema_id": schema_id, "record": record})
    json.dump(out, sys.stdout, default=str)


if __name__ == "__main__":
    main()
