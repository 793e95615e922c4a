#!/usr/bin/env python3
"""WAF cost: benign POSTs with a query string and a 2 KiB JSON body through a
plain route and through the same route with the `waf` plugin (default
paranoia), in one run.

Portico is pinned to core 0 with one worker; the backend and wrk share core 1;
the routes alternate within each round; medians.

Usage: bench/waf.sh [--rounds 5] [--duration 5] [--crs]

--crs adds the same route with `waf: { engine: crs }` (the OWASP Core Rule
Set through libmodsecurity); Portico must then be built with
`cargo build --release --features crs`.
"""
import json, os, subprocess, sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import (arg_parser, BACKEND, PORTICO, PROXY_CORE, print_table, rounds, scratch_dir, start_backend,
                   wait_port, wrk)
from transform import body_2k

GATEWAY = 18086

CONFIG = """
listeners: [{{ name: bench, addr: "127.0.0.1:{port}" }}]
access_log: {{ enabled: false }}
upstreams: {{ backend: {{ targets: ["127.0.0.1:{backend}"] }} }}
routes:
  - {{ name: plain, match: {{ path: /plain }}, upstream: backend, rewrite: {{ path: /small }} }}
  - {{ name: waf, match: {{ path: /waf }}, upstream: backend, rewrite: {{ path: /small }}, plugins: {{ waf: {{}} }} }}
"""

CRS_ROUTE = """  - {{ name: crs, match: {{ path: /crs }}, upstream: backend, rewrite: {{ path: /small }}, plugins: {{ waf: {{ engine: crs }} }} }}
"""

QUERY = "?q=running+shoes&size=42&color=dark%20blue&page=2&sort=-price&utm_source=newsletter"


def main():
    parser = arg_parser()
    parser.add_argument("--crs", action="store_true", help="also the Core Rule Set engine")
    args = parser.parse_args()
    tmp = scratch_dir("portico-waf-bench-")
    script = os.path.join(tmp, "post.lua")
    with open(script, "w") as f:
        f.write('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                'wrk.headers["User-Agent"] = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0"\n'
                'wrk.headers["Cookie"] = "session=8f14e45fceea167a5a36dedd4bea2543; theme=dark"\n'
                f'wrk.body = {json.dumps(body_2k())}\n')
    backend = start_backend(tmp)
    conf = os.path.join(tmp, "portico.yaml")
    with open(conf, "w") as f:
        f.write(CONFIG.format(port=GATEWAY, backend=BACKEND) + (CRS_ROUTE.format() if args.crs else ""))
    portico = subprocess.Popen(["taskset", "-c", PROXY_CORE, PORTICO, "run", "--config", conf, "--workers", "1",
                                "--no-watch"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(BACKEND)
        wait_port(GATEWAY)
        cases = [(name, GATEWAY, portico.pid, path + QUERY, ["-s", script])
                 for name, path in [("plain proxying", "/plain"), ("waf, paranoia 1", "/waf")]
                 + ([("waf, engine: crs", "/crs")] if args.crs else [])]
        for _, port, _, path, options in cases:
            wrk(f"http://127.0.0.1:{port}{path}", args.connections, 1, options)
        print_table(rounds(cases, args), "plain proxying", args, "Portico")
    finally:
        portico.terminate()
        portico.wait(timeout=40)
        backend.terminate()


if __name__ == "__main__":
    main()
