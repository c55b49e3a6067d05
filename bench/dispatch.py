"""POSTs N dispatches of template `t` (a 1 KiB payload each) to the coordinator's
HTTP API from THREADS keep-alive connections, or (with --healthz) N GETs of
/healthz, the HTTP round trip with nothing behind it. Prints the seconds taken and
the job ids made (one a line, after the time)."""
import http.client
import sys
import threading
import time
import urllib.parse

url, token_file, n, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
healthz = "--healthz" in sys.argv
token = open(token_file).read().strip()
host = urllib.parse.urlparse(url).netloc
payload = b"x" * 1024
ids = []
lock = threading.Lock()


def worker(count):
    conn = http.client.HTTPConnection(host)
    mine = []
    for _ in range(count):
        if healthz:
            conn.request("GET", "/healthz")
        else:
            conn.request("POST", "/api/templates/t/dispatch?size=1k", body=payload,
                         headers={"Authorization": "Bearer " + token})
        resp = conn.getresponse()
        body = resp.read()
        if resp.status != 200:
            sys.exit(f"HTTP {resp.status}: {body[:200]!r}")
        if not healthz:
            mine.append(body)
    with lock:
        ids.extend(mine)


per = [n // threads + (1 if i < n % threads else 0) for i in range(threads)]
start = time.monotonic()
ts = [threading.Thread(target=worker, args=(c,)) for c in per]
for t in ts:
    t.start()
for t in ts:
    t.join()
print(f"{time.monotonic() - start:.3f}")
