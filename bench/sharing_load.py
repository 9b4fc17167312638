"""A bounded local load on `elevflyt serve`: N `query` requests from C concurrent clients on
loopback; prints p50, p99, errors and the server's peak RSS.

    python3 bench/sharing_load.py PROFILE SHARE.SCHEMA.TABLE SERVER_PID [N] [C]

Only 127.0.0.1/localhost endpoints are accepted (the profile's endpoint).
"""
import http.client
import json
import sys
import threading
import time
import urllib.parse


def main():
    profile, table, pid = sys.argv[1], sys.argv[2], int(sys.argv[3])
    total = int(sys.argv[4]) if len(sys.argv) > 4 else 2000
    clients = int(sys.argv[5]) if len(sys.argv) > 5 else 50
    p = json.load(open(profile))
    ep = urllib.parse.urlparse(p["endpoint"])
    assert ep.hostname in ("127.0.0.1", "localhost"), "loopback only"
    share, schema, name = table.split(".")
    path = f"{ep.path.rstrip('/')}/shares/{share}/schemas/{schema}/tables/{name}/query"
    headers = {"Authorization": f"Bearer {p['bearerToken']}", "Content-Type": "application/json"}
    times, errors, lock = [], [], threading.Lock()
    todo = iter(range(total))

    def client():
        conn = http.client.HTTPConnection(ep.hostname, ep.port, timeout=30)
        while True:
            with lock:
                if next(todo, None) is None:
                    return
            t = time.perf_counter()
            try:
                conn.request("POST", path, body="{}", headers=headers)
                r = conn.getresponse()
                body = r.read()
                ok = r.status == 200 and body.count(b"\n") >= 3
            except Exception as e:  # a dropped connection is an error, then reconnect
                ok, body = False, str(e).encode()
                conn = http.client.HTTPConnection(ep.hostname, ep.port, timeout=30)
            with lock:
                times.append(time.perf_counter() - t)
                if not ok:
                    errors.append(body[:200])

    start = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.perf_counter() - start
    times.sort()
    pct = lambda q: times[min(len(times) - 1, int(q * len(times)))] * 1000
    rss = [l for l in open(f"/proc/{pid}/status") if l.startswith(("VmHWM", "VmRSS"))]
    print(json.dumps({
        "requests": len(times), "clients": clients, "errors": len(errors),
        "wall_s": round(wall, 2), "per_s": round(len(times) / wall, 1),
        "p50_ms": round(pct(0.50), 1), "p99_ms": round(pct(0.99), 1), "max_ms": round(times[-1] * 1000, 1),
        "server": {l.split(":")[0]: l.split(":")[1].strip() for l in rss},
    }))
    if errors:
        print("first error:", errors[0], file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
