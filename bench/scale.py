#!/usr/bin/env python3
"""The size of the config: 1, 1,000 and 10,000 routes (a mix of prefix,
exact, template and regex paths, one in ten a regex) with 10,000 consumers
on the large configs, and what each costs:

- requests/s and CPU per request through a template route in the middle
  of the table, and through a `key_auth` route whose consumer is in the
  middle of the consumers;
- RSS idle after start, and after the load;
- `portico validate` time, start-up time (until the port accepts), and
  the time of a reload through the admin API (`POST /reload`).

Portico is pinned to core 0 with one worker, the backend and wrk on core 1;
the sizes alternate within each round (each its own process); medians.

Usage: bench/scale.sh [--rounds 3] [--duration 5] [--sizes 1,1000,10000]
"""
import json, os, statistics, subprocess, sys, time, urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import (arg_parser, rss_mib, BACKEND, PORTICO, PROXY_CORE, measure, rounds, scratch_dir, start_backend,
                   stop, wait_port)

FIRST_PORT, FIRST_ADMIN = 18100, 18200
TOKEN = "bench-admin-token-0123456789abcdef"
CONSUMERS = 10_000


def route(i):
    """The i-th route: template, prefix, exact and regex paths, mixed."""
    kind = i % 10
    if kind == 0:
        return {"name": f"r{i}", "match": {"path": f"~ ^/re{i}/[0-9]+$"}, "upstream": "backend"}
    if kind in (1, 2, 3, 4):
        return {"name": f"r{i}", "match": {"path": f"/api{i}/users/{{id}}"}, "upstream": "backend",
                "rewrite": {"path": "/small"}}
    if kind in (5, 6, 7):
        return {"name": f"r{i}", "match": {"path": f"/svc{i}"}, "upstream": "backend"}
    return {"name": f"r{i}", "match": {"path": f"= /exact{i}"}, "upstream": "backend"}


def config(size, port, admin):
    middle = size // 2 - size // 2 % 10 + 1  # a template route in the middle
    routes = [route(i) for i in range(size)]
    if size == 1:
        routes = [{"name": "r1", "match": {"path": "/api1/users/{id}"}, "upstream": "backend",
                   "rewrite": {"path": "/small"}}]
        middle = 1
    routes.append({"name": "keyed", "match": {"path": "= /keyed"}, "upstream": "backend",
                   "rewrite": {"path": "/small"}, "plugins": {"key_auth": {}}})
    consumers = CONSUMERS if size > 1 else 1
    document = {
        "listeners": [{"name": "bench", "addr": f"127.0.0.1:{port}"}],
        "admin": {"addr": f"127.0.0.1:{admin}", "token": TOKEN},
        "access_log": {"enabled": False},
        "consumers": [{"name": f"c{n}", "credentials": {"api_keys": [f"key-{n:06d}-0123456789abcdef"]}}
                      for n in range(consumers)],
        "upstreams": {"backend": {"targets": [f"127.0.0.1:{BACKEND}"]}},
        "routes": routes,
    }
    return json.dumps(document), f"/api{middle}/users/42", f"key-{consumers // 2:06d}-0123456789abcdef"


def main():
    parser = arg_parser()
    parser.add_argument("--sizes", default="1,1000,10000")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    tmp = scratch_dir("portico-scale-bench-")
    backend = start_backend(tmp)
    wait_port(BACKEND)
    processes, facts, cases = [], {}, []
    try:
        for n, size in enumerate(sizes):
            port, admin = FIRST_PORT + n, FIRST_ADMIN + n
            text, path, key = config(size, port, admin)
            conf = os.path.join(tmp, f"routes-{size}.yaml")  # JSON is YAML
            with open(conf, "w") as f:
                f.write(text)
            started = time.monotonic()
            subprocess.run([PORTICO, "validate", "--config", conf], check=True, capture_output=True)
            validate = time.monotonic() - started
            started = time.monotonic()
            process = subprocess.Popen(["taskset", "-c", PROXY_CORE, PORTICO, "run", "--config", conf, "--workers",
                                        "1", "--no-watch"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            processes.append(process)
            wait_port(port)
            start = time.monotonic() - started
            time.sleep(1)
            idle = rss_mib(process.pid)
            request = urllib.request.Request(f"http://127.0.0.1:{admin}/reload", method="POST",
                                             headers={"Authorization": f"Bearer {TOKEN}"})
            started = time.monotonic()
            urllib.request.urlopen(request, timeout=120).read()
            reload_s = time.monotonic() - started
            facts[size] = {"validate": validate, "start": start, "reload": reload_s, "idle": idle,
                           "pid": process.pid, "bytes": len(text)}
            cases.append((f"{size:,} routes: template route", port, process.pid, path, []))
            cases.append((f"{size:,} routes: key_auth", port, process.pid, "/keyed", ["-H", f"X-API-Key: {key}"]))
        for name, port, pid, path, options in cases:  # warm-up
            measure((name, port, pid), path, args.connections, 1, extra=options)
        runs = rounds(cases, args)

        med = lambda name, key: statistics.median(r[key] for r in runs[name])
        base = {kind: med(f"{sizes[0]:,} routes: {kind}", "rps") for kind in ("template route", "key_auth")}
        print(f"Medians of {args.rounds} rounds of {args.duration}s, wrk -t1 -c{args.connections}, Portico pinned "
              f"to one core with one worker. Consumers: 1 with one route, {CONSUMERS:,} otherwise.\n")
        print("| config | route | req/s | vs smallest | p99 ms | CPU µs/req |")
        print("|---|---|---:|---:|---:|---:|")
        for name in runs:
            size, kind = name.split(" routes: ")
            print(f"| {size} routes | {kind} | {med(name, 'rps'):,.0f} | {med(name, 'rps') / base[kind]:.2f}x | "
                  f"{med(name, 'p99'):.2f} | {med(name, 'cpu_us'):.1f} |")
        print("\n| config | file | validate | start (port open) | reload (admin API) | RSS idle | RSS after load |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for size, fact in facts.items():
            print(f"| {size:,} routes | {fact['bytes'] / 1024:,.0f} KiB | {fact['validate'] * 1000:,.0f} ms | "
                  f"{fact['start'] * 1000:,.0f} ms | {fact['reload'] * 1000:,.0f} ms | {fact['idle']:.1f} MiB | "
                  f"{rss_mib(fact['pid']):.1f} MiB |")
    finally:
        stop(processes, backend)


if __name__ == "__main__":
    main()
