#!/usr/bin/env python3
"""What each policy of bench/policies.py's route costs on its own: GET /small
through routes that differ by one plugin (`key_auth`, `rate_limit` by client
address, the header `request_transform`), all three, and the same with the
access log on, against the plain route, in one run.

Two Portico processes (access log off; on) pinned to core 0 with one worker
each, the backend and wrk on core 1; cases alternate within each round;
medians. Every request carries the API key, so that the requests differ only
by what the route does.

Usage: python3 bench/policies_each.py [--rounds 5] [--duration 5] (after bench/tools.sh has built Portico)
"""
import os, statistics, sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import arg_parser, BACKEND, measure, rounds, scratch_dir, start_backend, start_portico, stop, wait_port
from policies import API_KEY, POLICY_PLUGINS

LOG_OFF, LOG_ON = 18094, 18095

CONFIG = """
listeners: [{{ name: bench, addr: "127.0.0.1:{port}" }}]
access_log: {{ enabled: {log} }}
consumers: [{{ name: bench, credentials: {{ api_keys: ["{key}"] }} }}]
upstreams: {{ backend: {{ targets: ["127.0.0.1:{backend}"] }} }}
routes:
  - {{ name: plain, match: {{ path: /small }}, upstream: backend }}
  - {{ name: key_auth, match: {{ path: /key_auth }}, upstream: backend, rewrite: {{ path: /small }}, plugins: {{ key_auth: {{}} }} }}
  - name: rate_limit
    match: {{ path: /rate_limit }}
    upstream: backend
    rewrite: {{ path: /small }}
    plugins: {{ rate_limit: {{ limits: [ {{ requests: 1000000000, per: 1s }} ], by: client_ip, store: local }} }}
  - name: transform
    match: {{ path: /transform }}
    upstream: backend
    rewrite: {{ path: /small }}
    plugins: {{ request_transform: {{ headers: {{ set: {{ X-Team: payments }}, remove: [ X-Debug ] }} }} }}
  - name: all
    match: {{ path: /all }}
    upstream: backend
    rewrite: {{ path: /small }}
    plugins:
""" + POLICY_PLUGINS


def main():
    args = arg_parser().parse_args()
    tmp = scratch_dir("portico-policies-each-")
    backend = start_backend(tmp)
    off, on = (start_portico(tmp, str(port), CONFIG.format(port=port, log=log, key=API_KEY, backend=BACKEND))
               for port, log in ((LOG_OFF, "false"), (LOG_ON, "true")))
    try:
        for port in (BACKEND, LOG_OFF, LOG_ON):
            wait_port(port)
        key = ["-H", f"X-API-Key: {API_KEY}"]
        cases = [("plain", LOG_OFF, off.pid, "/small", key),
                 ("plain, access log on", LOG_ON, on.pid, "/small", key),
                 ("key_auth", LOG_OFF, off.pid, "/key_auth", key),
                 ("rate_limit (by client_ip)", LOG_OFF, off.pid, "/rate_limit", key),
                 ("request_transform (headers)", LOG_OFF, off.pid, "/transform", key),
                 ("all three", LOG_OFF, off.pid, "/all", key),
                 ("all three, access log on", LOG_ON, on.pid, "/all", key)]
        for name, port, pid, path, options in cases:  # warm-up
            measure((name, port, pid), path, args.connections, 1, extra=options)
        runs = rounds(cases, args)
        base = runs["plain"]
        med = lambda measured, key: statistics.median(r[key] for r in measured)
        print(f"Medians of {args.rounds} rounds of {args.duration}s, wrk -t1 -c{args.connections}, each Portico "
              f"pinned to one core with one worker.\n")
        print("| route | req/s | vs plain | proxy CPU µs/req | added CPU µs/req | proxy busy |")
        print("|---|---:|---:|---:|---:|---:|")
        for name, measured in runs.items():
            print(f"| {name} | {med(measured, 'rps'):,.0f} | {med(measured, 'rps') / med(base, 'rps'):.2f}x | "
                  f"{med(measured, 'cpu_us'):.1f} | {med(measured, 'cpu_us') - med(base, 'cpu_us'):+.1f} | "
                  f"{med(measured, 'busy'):.0%} |")
    finally:
        stop([off, on], backend)


if __name__ == "__main__":
    main()
