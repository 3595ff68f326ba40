"""The container's health check: ``GET /healthz`` from the running server, on loopback.

The server writes the ports it listens on to ``<data>/listening.json``
(ourmail/net/portsfile.py); this asks the plain-HTTP listener (``http``), or the HTTPS one
(``web``) when that is off, and exits 0 for ``200 ok`` and 1 for anything else: no file (not
started), a refused connection, an error status (docs/metrics.md#healthz) or no answer within
the time-out (a hung process).  Only the standard library, so it runs on the base image's
python3.
"""

from __future__ import annotations

import http.client
import json
import os
import ssl
import sys
from pathlib import Path

#: Seconds for the connection and the answer together; the HEALTHCHECK's own time-out is longer.
TIMEOUT = 5.0


def probe(data: Path) -> str | None:
    """None when ``/healthz`` answers ``200``, else why not."""
    try:
        ports = json.loads((data / "listening.json").read_text())["ports"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"no listening.json in {data} ({e})"
    connection: http.client.HTTPConnection
    if "http" in ports:
        connection = http.client.HTTPConnection("127.0.0.1", ports["http"], timeout=TIMEOUT)
    elif "web" in ports:
        # Loopback to itself: the certificate (often self-signed) proves nothing here.
        context = ssl._create_unverified_context()  # noqa: S323
        connection = http.client.HTTPSConnection(
            "127.0.0.1", ports["web"], timeout=TIMEOUT, context=context
        )
    else:
        return "neither the http nor the web listener is on"
    try:
        connection.request("GET", "/healthz")
        response = connection.getresponse()
        body = response.read(200).decode("utf-8", "replace").strip()
    except (OSError, http.client.HTTPException) as e:
        return f"/healthz: {e or type(e).__name__}"
    finally:
        connection.close()
    if response.status == 403:
        why = "this check asks from 127.0.0.1, keep loopback in [metrics] networks"
        return f"/healthz: 403 {body}: {why}"
    return None if response.status == 200 else f"/healthz: {response.status} {body}"


def main() -> int:
    problem = probe(Path(os.environ.get("OURMAIL_DATA", "/var/lib/ourmail")))
    print(problem or "ok")
    return 1 if problem else 0


if __name__ == "__main__":
    sys.exit(main())
