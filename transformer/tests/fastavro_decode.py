#!/usr/bin/env python3
"""Independent Avro decoder for the transformer's integration tests.

Reads a JSON array of {"key": str, "value_hex": str} (Confluent-framed values) on stdin, fetches
each writer schema by id from the Confluent-compatible registry given as the first argument
(GET <url>/schemas/ids/<id>), decodes each datum, and prints a JSON array of
{"key": str, "schema_id": int, "decoder": str, "record": {...}} on stdout.

The decoder is Python fastavro when it is installed (`pip install fastavro`); otherwise the small
Avro binary decoder below, written from the Avro specification and driven only by the schema
JSON the registry returns (forced with AVRO_DECODER=builtin). Neither shares code with the Rust
types under test.
"""
import io
import json
import os
import struct
import sys
import urllib.request

try:
    import fastavro
except ImportError:  # the fallback decoder below is used instead
    fastavro = None
if os.environ.get("AVRO_DECODER") == "builtin":
    fastavro = None


class Reader:
    """Avro binary encoding (specification section "Binary Encoding")."""

    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise ValueError("datum ends early")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def long(self) -> int:
        shift, acc = 0, 0
        while True:
            b = self.take(1)[0]
            acc |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
        return (acc >> 1) ^ -(acc & 1)  # zigzag


def decode(schema, r: Reader, named: dict):
    if isinstance(schema, list):  # union: branch index, then the branch
        return decode(schema[r.long()], r, named)
    if isinstance(schema, str):
        if schema in named:
            return decode(named[schema], r, named)
        schema = {"type": schema}
    t = schema["type"]
    if isinstance(t, (list, dict)):
        return decode(t, r, named)
    if t == "null":
        return None
    if t == "boolean":
        return r.take(1)[0] != 0
    if t in ("int", "long"):
        return r.long()
    if t == "float":
        return struct.unpack("<f", r.take(4))[0]
    if t == "double":
        return struct.unpack("<d", r.take(8))[0]
    if t == "bytes":
        return r.take(r.long()).hex()
    if t == "string":
        return r.take(r.long()).decode("utf-8")
    if t == "record":
        named[schema["name"]] = schema
        if "namespace" in schema:
            named[schema["namespace"] + "." + schema["name"]] = schema
        return {f["name"]: decode(f["type"], r, named) for f in schema["fields"]}
    if t == "enum":
        named[schema["name"]] = schema
        return schema["symbols"][r.long()]
    if t == "fixed":
        named[schema["name"]] = schema
        return r.take(schema["size"]).hex()
    if t in ("array", "map"):
        out = [] if t == "array" else {}
        while True:
            count = r.long()
            if count == 0:
                return out
            if count < 0:  # block with its byte size
                count = -count
                r.long()
            for _ in range(count):
                if t == "array":
                    out.append(decode(schema["items"], r, named))
                else:
                    k = r.take(r.long()).decode("utf-8")
                    out[k] = decode(schema["values"], r, named)
    raise ValueError(f"unsupported avro type {t!r}")


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
                schemas[schema_id] = json.loads(json.load(resp)["schema"])
        schema = schemas[schema_id]
        if fastavro is not None:
            record = fastavro.schemaless_reader(io.BytesIO(raw[5:]), fastavro.parse_schema(schema))
            decoder = "fastavro"
        else:
            reader = Reader(raw[5:])
            record = decode(schema, reader, {})
            if reader.pos != len(reader.data):
                raise SystemExit(f"value of {item['key']}: {len(reader.data) - reader.pos} bytes left over")
            decoder = "builtin"
        out.append({"key": item["key"], "schema_id": schema_id, "decoder": decoder, "record": record})
    json.dump(out, sys.stdout, default=str)


if __name__ == "__main__":
    main()
