"""Docker HEALTHCHECK for the soundsift image: exit 0 when /readyz answers 200, else 1.

Plain Python (the image has no curl). Reads the same SOUNDSIFT_HOST / SOUNDSIFT_PORT the server
listens on; a wildcard host (0.0.0.0, ::) is checked on loopback.
"""

import os
import sys
import urllib.request

host = os.environ.get("SOUNDSIFT_HOST", "127.0.0.1").strip()
if host in ("", "0.0.0.0", "::"):
    host = "127.0.0.1"
if ":" in host:
    host = f"[{host}]"
url = f"http://{host}:{os.environ.get('SOUNDSIFT_PORT', '7860')}/readyz"
try:
    with urllib.request.urlopen(url, timeout=3) as response:
        sys.exit(0 if response.status == 200 else 1)
except Exception as error:  # connection refused, 503 while loading, timeout
    print(f"{url}: {error}", file=sys.stderr)
    sys.exit(1)
