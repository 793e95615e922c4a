#!/usr/bin/env python3
"""Rate-limit cost, and the local store's memory under a flood of keys.

Part 1: one route without limits, with a local limit high enough never to
trigger, and with the same limit in Redis (a redis-server the script starts on
core 1), in one run: Portico pinned to core 0 with one worker, the backend,
Redis and wrk on core 1, the routes alternating within each round; medians.

Part 2: one million requests, each with a distinct key (`by: header:x-key`),
against a local limit; Portico's RSS before and after.

Usage: bench/limits.sh [--rounds 5] [--duration 5] [--keys 1000000]
"""
import os, subprocess, sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import (arg_parser, rss_mib, BACKEND, LOAD_CORE, PORTICO, PROXY_CORE, print_table, rounds, scratch_dir,
                   start_backend, wait_port, wrk, wrk_run)

GATEWAY, REDIS = 18084, 18098

CONFIG = """
listeners: [{{ name: bench, addr: "127.0.0.1:{port}" }}]
access_log: {{ enabled: false }}
cluster: {{ redis: "redis://127.0.0.1:{redis}/0" }}
upstreams: {{ backend: {{ targets: ["127.0.0.1:{backend}"] }} }}
routes:
  - {{ name: none, match: {{ path: /none }}, upstream: backend, rewrite: {{ path: /small }} }}
  - {{ name: local, match: {{ path: /local }}, upstream: backend, rewrite: {{ path: /small }},
      plugins: {{ rate_limit: {{ limits: [ {{ requests: 1000000000, per: 1s }} ], by: client_ip, store: local }} }} }}
  - {{ name: redis, match: {{ path: /redis }}, upstream: backend, rewrite: {{ path: /small }},
      plugins: {{ rate_limit: {{ limits: [ {{ requests: 1000000000, per: 1s }} ], by: client_ip, store: redis }} }} }}
  - {{ name: flood, match: {{ path: /flood }}, upstream: backend, rewrite: {{ path: /small }},
      plugins: {{ rate_limit: {{ limits: [ {{ requests: 100, per: 1m, algorithm: sliding_window }} ], by: "header:x-key", store: local }} }} }}
"""

# Each run passes its own prefix, so keys stay distinct across runs.
DISTINCT_KEYS = """
counter = 0
prefix = ""
init = function(args) prefix = args[1] end
request = function()
  counter = counter + 1
  return wrk.format(nil, nil, { ["X-Key"] = prefix .. "-" .. counter })
end
"""


def run_wrk(url, connections, duration, script=None, script_args=()):
    return wrk_run(url, connections, duration, ["-s", script] if script else [], script_args)


def main():
    parser = arg_parser()
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--flood-only", action="store_true", help="only the distinct-keys memory run")
    args = parser.parse_args()
    tmp = scratch_dir("portico-limits-bench-")
    backend = start_backend(tmp)
    redis = subprocess.Popen(["taskset", "-c", LOAD_CORE, "redis-server", "--port", str(REDIS), "--bind", "127.0.0.1",
                              "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL)
    conf = os.path.join(tmp, "portico.yaml")
    with open(conf, "w") as f:
        f.write(CONFIG.format(port=GATEWAY, redis=REDIS, backend=BACKEND))
    script = os.path.join(tmp, "keys.lua")
    with open(script, "w") as f:
        f.write(DISTINCT_KEYS)
    portico = subprocess.Popen(["taskset", "-c", PROXY_CORE, PORTICO, "run", "--config", conf, "--workers", "1",
                                "--no-watch"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(BACKEND)
        wait_port(REDIS)
        wait_port(GATEWAY)
        cases = [] if args.flood_only else [("no limit", "/none"), ("local limit", "/local"), ("redis limit", "/redis")]
        if cases:
            cases = [(name, GATEWAY, portico.pid, path) for name, path in cases]
            for _, port, _, path in cases:  # warm-up
                wrk(f"http://127.0.0.1:{port}{path}", args.connections, 1)
            print_table(rounds(cases, args), "no limit", args, "Portico")

        before = rss_mib(portico.pid)
        sent, run = 0, 0
        while sent < args.keys:
            run += 1
            requests, _ = run_wrk(f"http://127.0.0.1:{GATEWAY}/flood", args.connections, 10, script, [f"run{run}"])
            sent += requests
        after = rss_mib(portico.pid)
        print(f"\nDistinct keys: {sent:,} requests, each with its own `x-key`, against a local limit "
              f"(by: header:x-key). RSS before: {before:.1f} MiB, after: {after:.1f} MiB.")
    finally:
        portico.terminate()
        portico.wait(timeout=40)
        redis.terminate()
        backend.terminate()


if __name__ == "__main__":
    main()
