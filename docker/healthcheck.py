"""The web container's HEALTHCHECK: ``GET /health/`` on gunicorn, exit 0 when it answers 200.

Django refuses a Host that ``ALLOWED_HOSTS`` does not list, so the probe sends
the first listed host (``.example.com`` becomes ``example.com``).
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request


def probe_host(allowed_hosts: str) -> str:
    hosts = [host.strip() for host in allowed_hosts.split(",") if host.strip() and host.strip() != "*"]
    return hosts[0].lstrip(".") if hosts else "localhost"


def main() -> int:
    url = f"http://127.0.0.1:{os.environ.get('PORT', '8000')}/health/"
    request = urllib.request.Request(url, headers={"Host": probe_host(os.environ.get("ALLOWED_HOSTS", ""))})
    try:
        with urllib.request.urlopen(request, timeout=4) as response:  # noqa: S310 (a fixed http URL)
            return 0 if response.status == 200 else 1
    except (urllib.error.URLError, OSError) as error:
        print(f"health check failed: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
