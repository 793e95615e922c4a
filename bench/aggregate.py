#!/usr/bin/env python3
"""Aggregation cost: a three-call composite (three upstreams, each answering
a small JSON document) next to one proxied call of the same document, and
the backend directly, in one run.

Portico is pinned to core 0 with one worker; the backend (nginx) and wrk
share core 1; the targets alternate within each round; medians.

Usage: bench/aggregate.sh [--rounds 5] [--duration 5]
"""
import os, subprocess, sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import arg_parser, BACKEND, PORTICO, PROXY_CORE, print_table, rounds, scratch_dir, start_backend, wait_port, wrk

GATEWAY = 18086

CONFIG = """
listeners: [{{ name: bench, addr: "127.0.0.1:{port}" }}]
access_log: {{ enabled: false }}
upstreams:
  users: {{ targets: ["127.0.0.1:{backend}"] }}
  orders: {{ targets: ["127.0.0.1:{backend}"] }}
  notifications: {{ targets: ["127.0.0.1:{backend}"] }}
routes:
  - {{ name: single, match: {{ path: /single }}, upstream: users, rewrite: {{ path: /json }} }}
  - name: composite
    match: {{ path: /composite }}
    aggregate:
      calls:
        user: {{ upstream: users, path: /json }}
        orders: {{ upstream: orders, path: /json }}
        notifications: {{ upstream: notifications, path: /json, optional: true }}
"""


def main():
    parser = arg_parser()
    args = parser.parse_args()
    tmp = scratch_dir("portico-aggregate-bench-")
    backend = start_backend(tmp)
    conf = os.path.join(tmp, "portico.yaml")
    with open(conf, "w") as f:
        f.write(CONFIG.format(port=GATEWAY, backend=BACKEND))
    portico = subprocess.Popen(["taskset", "-c", PROXY_CORE, PORTICO, "run", "--config", conf, "--workers", "1",
                                "--no-watch"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(BACKEND)
        wait_port(GATEWAY)
        cases = [("backend directly", BACKEND, None, "/json"),
                 ("one proxied call", GATEWAY, portico.pid, "/single"),
                 ("three-call composite", GATEWAY, portico.pid, "/composite")]
        for _, port, _, path in cases:
            wrk(f"http://127.0.0.1:{port}{path}", args.connections, 1)
        print_table(rounds(cases, args), "one proxied call", args, "Portico")
    finally:
        portico.terminate()
        portico.wait(timeout=40)
        backend.terminate()


if __name__ == "__main__":
    main()
