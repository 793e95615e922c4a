#!/usr/bin/env python3
"""Transform and validation cost: POSTs of a 2 KiB JSON body through a plain
route, a route with a JSON rename, one with a JSON Schema, one validated by
an OpenAPI document with the same schema, and one converting the body to XML,
in one run.

Portico is pinned to core 0 with one worker; the backend and wrk share core 1;
the routes alternate within each round; medians.

Usage: bench/transform.sh [--rounds 5] [--duration 5]
"""
import json, os, subprocess, sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import (arg_parser, BACKEND, PORTICO, PROXY_CORE, cpu_seconds, median, scratch_dir, start_backend,
                   wait_port, wrk_run)

GATEWAY = 18085

CONFIG = """
listeners: [{{ name: bench, addr: "127.0.0.1:{port}" }}]
access_log: {{ enabled: false }}
upstreams: {{ backend: {{ targets: ["127.0.0.1:{backend}"] }} }}
routes:
  - {{ name: plain, match: {{ path: /plain }}, upstream: backend, rewrite: {{ path: /small }} }}
  - {{ name: rename, match: {{ path: /rename }}, upstream: backend, rewrite: {{ path: /small }},
      plugins: {{ request_transform: {{ json: {{ rename: {{ userId: id, "items[*].sku": "items[*].article" }} }} }} }} }}
  - {{ name: schema, match: {{ path: /schema }}, upstream: backend, rewrite: {{ path: /small }},
      plugins: {{ validate: {{ body: {schema} }} }} }}
  - {{ name: openapi, match: {{ path: /openapi }}, upstream: backend, rewrite: {{ path: /small }},
      plugins: {{ validate: {{ openapi: {spec}, unknown_operations: reject }} }} }}
  - {{ name: xml, match: {{ path: /xml }}, upstream: backend, rewrite: {{ path: /small }},
      plugins: {{ format: {{ request: json_to_xml, xml: {{ root: order }} }} }} }}
"""

SCHEMA = {
    "type": "object",
    "required": ["userId", "items"],
    "properties": {
        "userId": {"type": "string"},
        "items": {"type": "array", "items": {"type": "object", "required": ["sku", "qty"],
                                             "properties": {"sku": {"type": "string"}, "qty": {"type": "integer"}}}},
    },
}


def body_2k():
    items = []
    body = {"userId": "user-42", "items": items, "note": ""}
    while len(json.dumps(body)) < 2000:
        items.append({"sku": f"sku-{len(items):04d}", "qty": len(items) % 7 + 1})
    body["note"] = "x" * (2048 - len(json.dumps(body)))
    return json.dumps(body)


def run_wrk(url, script, connections, duration):
    return wrk_run(url, connections, duration, ["-s", script])


def main():
    parser = arg_parser()
    args = parser.parse_args()
    tmp = scratch_dir("portico-transform-bench-")
    body = body_2k()
    script = os.path.join(tmp, "post.lua")
    with open(script, "w") as f:
        f.write(f'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\nwrk.body = {json.dumps(body)}\n')
    backend = start_backend(tmp)
    spec = os.path.join(tmp, "openapi.json")
    with open(spec, "w") as f:
        json.dump({"openapi": "3.1.0", "info": {"title": "bench", "version": "1"},
                   "paths": {"/small": {"post": {"requestBody": {
                       "required": True, "content": {"application/json": {"schema": SCHEMA}}}}}}}, f)
    conf = os.path.join(tmp, "portico.yaml")
    with open(conf, "w") as f:
        f.write(CONFIG.format(port=GATEWAY, backend=BACKEND, schema=json.dumps(SCHEMA), spec=spec))
    portico = subprocess.Popen(["taskset", "-c", PROXY_CORE, PORTICO, "run", "--config", conf, "--workers", "1",
                                "--no-watch"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(BACKEND)
        wait_port(GATEWAY)
        cases = [("plain proxying", "/plain"), ("JSON rename", "/rename"), ("JSON Schema", "/schema"),
                 ("OpenAPI operation", "/openapi"), ("JSON → XML", "/xml")]
        for _, path in cases:
            run_wrk(f"http://127.0.0.1:{GATEWAY}{path}", script, args.connections, 1)
        runs = {name: [] for name, _ in cases}
        for round_ in range(args.rounds):
            for name, path in cases:
                before = cpu_seconds(portico.pid)
                requests, rps = run_wrk(f"http://127.0.0.1:{GATEWAY}{path}", script, args.connections, args.duration)
                runs[name].append({"rps": rps, "cpu_us": (cpu_seconds(portico.pid) - before) * 1e6 / requests})
            print(f"round {round_ + 1}/{args.rounds} done", file=sys.stderr)
        base, base_cpu = median(runs["plain proxying"], "rps"), median(runs["plain proxying"], "cpu_us")
        print(f"Medians of {args.rounds} rounds of {args.duration}s, wrk -t1 -c{args.connections}, POST of a "
              f"{len(body)}-byte JSON body, Portico pinned to one core with one worker.\n")
        print("| route | req/s | vs plain | CPU µs/req | vs plain |")
        print("|---|---:|---:|---:|---:|")
        for name, _ in cases:
            rps, cpu = median(runs[name], "rps"), median(runs[name], "cpu_us")
            print(f"| {name} | {rps:,.0f} | {rps / base:.2f}x | {cpu:.1f} | {cpu / base_cpu:.2f}x |")
    finally:
        portico.terminate()
        portico.wait(timeout=40)
        backend.terminate()


if __name__ == "__main__":
    main()
