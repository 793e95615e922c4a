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
from bench import (arg_parser, BACKEND, PORTICO, PROXY_CORE, print_table, rounds, scratch_dir, start_backend,
                   wait_port, wrk)

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
        cases = [(name, GATEWAY, portico.pid, path, ["-s", script]) for name, path in cases]
        for _, port, _, path, options in cases:  # warm-up
            wrk(f"http://127.0.0.1:{port}{path}", args.connections, 1, options)
        print(f"POSTs of a {len(body)}-byte JSON body.")
        print_table(rounds(cases, args), "plain proxying", args, "Portico")
    finally:
        portico.terminate()
        portico.wait(timeout=40)
        backend.terminate()


if __name__ == "__main__":
    main()
