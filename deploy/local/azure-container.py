#!/usr/bin/env python3
"""Creates a blob container on Azurite, the Azure Storage emulator that deploy/local/lib.sh
(start_azure) runs for the lake sink's az:// test: one `PUT ?restype=container` signed with the
emulator's well-known Shared Key account (devstoreaccount1), standard library only. An existing
container is fine.

Usage: azure-container.py ENDPOINT CONTAINER   (ENDPOINT e.g. http://127.0.0.1:10000)
"""
import base64
import datetime
import hashlib
import hmac
import sys
import urllib.error
import urllib.request

# Azurite's published development account: not a secret.
ACCOUNT = "devstoreaccount1"
KEY = base64.b64decode(
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
VERSION = "2021-08-06"


def main():
    endpoint, container = sys.argv[1].rstrip("/"), sys.argv[2]
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%a, %d %b %Y %H:%M:%S GMT")
    # The string to sign: the verb, eleven standard headers (all empty here), the x-ms-
    # headers, and the resource (path-style: the account twice).
    signed = "\n".join(
        ["PUT"] + [""] * 11
        + [f"x-ms-date:{date}\nx-ms-version:{VERSION}",
           f"/{ACCOUNT}/{ACCOUNT}/{container}\nrestype:container"]
    )
    signature = base64.b64encode(hmac.new(KEY, signed.encode(), hashlib.sha256).digest()).decode()
    request = urllib.request.Request(
        f"{endpoint}/{ACCOUNT}/{container}?restype=container",
        method="PUT",
        headers={
            "x-ms-date": date,
            "x-ms-version": VERSION,
            "Content-Length": "0",
            "Authorization": f"SharedKey {ACCOUNT}:{signature}",
        },
    )
    try:
        urllib.request.urlopen(request, timeout=10)
    except urllib.error.HTTPError as e:
        if e.code != 409:  # 409: the container exists already
            sys.exit(f"creating container {container} at {endpoint}: HTTP {e.code}: {e.read()[:300]!r}")


if __name__ == "__main__":
    main()
