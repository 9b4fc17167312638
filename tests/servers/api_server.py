#!/usr/bin/env python3
"""A FINT or OneRoster REST test server for elevflyt's tests and bench: serves the collections
`elevflyt generate --format fint|oneroster-rest` wrote, paged, behind a real OAuth2 token
endpoint, with faults on request (a 429, a 500, an expired token, a crash at a given page).

Standard library only; listens on 127.0.0.1 (port 0 = a free one) and prints
`listening http://127.0.0.1:PORT` when ready.

  api_server.py --kind fint --dir DATA --date 2026-09-01 --client-id ID --client-secret S \
      [--password P --username U] [--token-ttl 3600] [--fail elev:1=429,person:0=500] \
      [--expire-token-after N] [--die-at-page N]
"""
import argparse
import json
import os
import pathlib
import secrets
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FINT_BASE = "https://fint.invalid/utdanning"
FINT_PATHS = {
    "utdanningsprogram/skole": "skole",
    "elev/klasse": "klasse",
    "elev/klassemedlemskap": "klassemedlemskap",
    "elev/person": "person",
    "elev/elev": "elev",
    "elev/elevforhold": "elevforhold",
}
ONEROSTER = ["orgs", "academicSessions", "classes", "users", "enrollments"]


def load(kind, folder, date):
    """collection -> [(entry text, changed-at ms)]: an entry that is also in the previous date's
    file keeps time 0, a new or changed one gets the server's start time (for sinceTimeStamp)."""
    started = int(time.time() * 1000)
    names = FINT_PATHS.values() if kind == "fint" else ONEROSTER
    out = {}
    for name in names:
        dates = sorted(p.name[len(name) + 1:-5] for p in folder.glob(f"{name}-*.json")
                       if p.name[len(name) + 1:-5] <= date and p.name[len(name) + 1:len(name) + 2].isdigit())
        if not dates:
            raise SystemExit(f"no {name}-*.json on or before {date} in {folder}")

        def entries(d):
            doc = json.loads((folder / f"{name}-{d}.json").read_text(encoding="utf-8"))
            items = doc["_embedded"]["_entries"] if kind == "fint" else doc[name]
            return [json.dumps(e, ensure_ascii=False, separators=(",", ":")) for e in items]

        now = entries(dates[-1])
        before = set(entries(dates[-2])) if len(dates) > 1 else set()
        out[name] = [(e, 0 if e in before else started) for e in now]
    return out


class State:
    def __init__(self, a):
        self.a = a
        self.data = load(a.kind, pathlib.Path(a.dir), a.date)
        self.tokens = {}
        self.lock = threading.Lock()
        self.page_requests = 0
        self.faults = {}
        for f in filter(None, (a.fail or "").split(",")):
            where, status = f.split("=")
            coll, page = where.split(":")
            # A status, or `hang`: no answer for 30 s (the client's timeout must fire).
            self.faults[(coll, int(page))] = status if status == "hang" else int(status)
        self.log = []


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def send(self, status, body, headers=()):
        data = body.encode("utf-8") if isinstance(body, str) else body
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        s = self.server.state
        length = int(self.headers.get("Content-Length") or 0)
        form = dict(urllib.parse.parse_qsl(self.rfile.read(length).decode()))
        if urllib.parse.urlparse(self.path).path != "/oauth/token":
            return self.send(404, "{}")
        a = s.a
        ok = form.get("client_id") == a.client_id and form.get("client_secret") == a.client_secret
        grant = form.get("grant_type")
        if grant == "password":
            ok = ok and form.get("username") == a.username and form.get("password") == a.password
        elif grant != "client_credentials":
            return self.send(400, json.dumps({"error": "unsupported_grant_type"}),
                             [("Content-Type", "application/json")])
        if not ok:
            return self.send(401, json.dumps({"error": "invalid_client"}),
                             [("Content-Type", "application/json")])
        token = secrets.token_urlsafe(24)
        with s.lock:
            s.tokens[token] = {"expires": time.time() + a.token_ttl, "pages": 0}
            s.log.append("token")
        self.send(200, json.dumps({"access_token": token, "token_type": "bearer",
                                   "expires_in": a.token_ttl, "scope": form.get("scope", "")}),
                  [("Content-Type", "application/json")])

    def do_GET(self):
        s, a = self.server.state, self.server.state.a
        url = urllib.parse.urlparse(self.path)
        q = dict(urllib.parse.parse_qsl(url.query))
        auth = self.headers.get("Authorization", "")
        token = auth[7:] if auth.startswith("Bearer ") else None
        with s.lock:
            t = s.tokens.get(token)
            expired = (t is None or time.time() > t["expires"]
                       or (a.expire_token_after and t["pages"] >= a.expire_token_after))
            if not expired:
                t["pages"] += 1
        if expired:
            with s.lock:
                s.log.append("401")
            return self.send(401, json.dumps({"error": "invalid_token"}),
                             [("Content-Type", "application/json"), ("WWW-Authenticate", "Bearer")])
        base = f"http://127.0.0.1:{self.server.server_port}"
        if a.kind == "fint":
            prefix = "/utdanning/"
            name = FINT_PATHS.get(url.path[len(prefix):].strip("/")) if url.path.startswith(prefix) else None
            size_key = "size"
        else:
            prefix = f"/ims/oneroster/{'rostering/v1p2' if a.version == 'v1p2' else 'v1p1'}/"
            rest = url.path[len(prefix):].strip("/") if url.path.startswith(prefix) else None
            name = rest if rest in ONEROSTER else None
            size_key = "limit"
        if name is None:
            return self.send(404, json.dumps({"message": "not found"}), [("Content-Type", "application/json")])
        size = min(int(q.get(size_key, 100)), 5000)
        offset = int(q.get("offset", 0))
        page = offset // max(size, 1)
        with s.lock:
            s.page_requests += 1
            n = s.page_requests
            fault = s.faults.pop((name, page), None)
            s.log.append(f"{name}:{page}" + (f"={fault}" if fault else ""))
        if a.die_at_page and n >= a.die_at_page:
            os._exit(3)
        if fault == "hang":
            time.sleep(30)
            return
        if fault:
            headers = [("Content-Type", "application/json")]
            if fault == 429:
                headers.append(("Retry-After", "1"))
            return self.send(fault, json.dumps({"message": "try again"}), headers)
        entries = s.data[name]
        since = q.get("sinceTimeStamp")
        if since is not None:
            entries = [e for e in entries if e[1] > int(since)]
        chunk = [e for e, _ in entries[offset:offset + size]]
        if a.kind == "fint":
            body = ('{"_embedded":{"_entries":[' + ",".join(chunk) + ']},"_links":{"self":[{"href":"'
                    + f"{base}/utdanning/{url.path[len(prefix):]}" + '"}]},'
                    + f'"total_items":{len(entries)},"size":{len(chunk)},"offset":{offset}}}')
            body = body.replace(FINT_BASE, f"{base}/utdanning")
            ctype = "application/hal+json;charset=UTF-8"
            headers = [("Content-Type", ctype)]
        else:
            body = '{"' + name + '":[' + ",".join(chunk) + "]}"
            headers = [("Content-Type", "application/json"), ("X-Total-Count", str(len(entries)))]
        self.send(200, body, headers)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--kind", choices=["fint", "oneroster"], required=True)
    p.add_argument("--version", default="v1p1", choices=["v1p1", "v1p2"])
    p.add_argument("--dir", required=True)
    p.add_argument("--date", required=True)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--client-id", default="elevflyt")
    p.add_argument("--client-secret", required=True)
    p.add_argument("--username")
    p.add_argument("--password")
    p.add_argument("--token-ttl", type=int, default=3600)
    p.add_argument("--fail", help="collection:page=status|hang,… (each once)")
    p.add_argument("--expire-token-after", type=int, default=0, help="pages per token before it answers 401")
    p.add_argument("--die-at-page", type=int, default=0, help="exit at the Nth page request")
    p.add_argument("--log", help="write the request log here at exit (SIGTERM)")
    a = p.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", a.port), Handler)
    server.daemon_threads = True
    server.state = State(a)
    print(f"listening http://127.0.0.1:{server.server_port}", flush=True)
    import signal

    def stop(*_):
        if a.log:
            pathlib.Path(a.log).write_text("\n".join(server.state.log))
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    try:
        server.serve_forever()
    finally:
        stop()


if __name__ == "__main__":
    main()
