#!/usr/bin/env python3
"""Instructions each policy of bench/policies.py's route adds to a request,
counted as bench/instructions.py counts them (callgrind, FEW and MANY
requests on one keep-alive connection, the difference over the difference):
the route `/policies` rewritten to `/small` with the key header sent and no
plugin, then with the access log, key_auth, rate_limit, the header transform
alone, then with all of them (policies.py's own route).

Usage: bench/instructions_each.py [BINARY] [--few 500] [--many 2500]
"""
import argparse, os, sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import instructions, policies
from bench import BACKEND, PORTICO, scratch_dir, start_backend, wait_port

ROUTE = """
listeners: [{{ name: bench, addr: "127.0.0.1:{port}" }}]
access_log: {{ enabled: {log} }}
consumers: [{{ name: bench, credentials: {{ api_keys: ["{key}"] }} }}]
upstreams: {{ backend: {{ targets: ["127.0.0.1:{backend}"] }} }}
routes:
  - name: policies
    match: {{ path: /policies }}
    upstream: backend
    rewrite: {{ path: /small }}
    plugins: {plugins}
"""

# (name, access log on, plugins); None: policies.py's route itself.
VARIANTS = [
    ("no plugin", "false", "{}"),
    ("access log", "true", "{}"),
    ("key_auth", "false", "{ key_auth: {} }"),
    ("rate_limit", "false",
     "{ rate_limit: { limits: [ { requests: 1000000000, per: 1s } ], by: consumer, store: local } }"),
    ("transform", "false", "{ request_transform: { headers: { set: { X-Team: payments }, remove: [ X-Debug ] } } }"),
    ("all, as policies.py", None, None),
]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("binary", nargs="?", default=PORTICO)
    parser.add_argument("--few", type=int, default=500)
    parser.add_argument("--many", type=int, default=2500)
    args = parser.parse_args()
    tmp = scratch_dir("portico-instructions-each-")
    backend = start_backend(tmp)
    try:
        wait_port(BACKEND)
        target = ("/policies", ["-H", f"X-API-Key: {policies.API_KEY}"])
        baseline = None
        for name, log, plugins in VARIANTS:
            conf = os.path.join(tmp, "portico.yaml")
            with open(conf, "w") as f:
                if plugins is None:
                    text = policies.POLICIES_CONFIG.format(port=instructions.GATEWAY, backend=BACKEND,
                                                           key=policies.API_KEY, pem='"unused"')
                    f.write(text[: text.index("  - name: jwt")])
                else:
                    f.write(ROUTE.format(port=instructions.GATEWAY, backend=BACKEND, key=policies.API_KEY, log=log,
                                         plugins=plugins))
            few = instructions.total_instructions(args.binary, conf, args.few, tmp, target=target)
            many = instructions.total_instructions(args.binary, conf, args.many, tmp, target=target)
            per_request = (many - few) / (args.many - args.few)
            baseline = baseline if baseline is not None else per_request
            print(f"{name:22} {per_request:9,.0f} instructions a request  (+{per_request - baseline:,.0f})", flush=True)
    finally:
        backend.terminate()


if __name__ == "__main__":
    main()
