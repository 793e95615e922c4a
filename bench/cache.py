#!/usr/bin/env python3
"""Cache hits: the backend directly, plain proxying, and cache hits from
Portico's memory store and its Redis store, next to nginx proxying and nginx
proxy_cache hits, in one run: GETs of the 13-byte /small.

Portico and the nginx proxy are pinned to core 0 with one worker; the
backend, redis-server and wrk share core 1; targets alternate within each
round; medians.

Usage: bench/cache.sh [--rounds 5] [--duration 5]
"""
import os, subprocess, sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import (arg_parser, BACKEND, LOAD_CORE, PORTICO, PROXY_CORE, nginx_worker, print_table, rounds, scratch_dir,
                   start_backend, start_nginx, wait_port, wrk)

GATEWAY, NGINX_PROXY, REDIS = 18087, 18088, 18089

CONFIG = """
listeners: [{{ name: bench, addr: "127.0.0.1:{port}" }}]
access_log: {{ enabled: false }}
cluster: {{ redis: "redis://127.0.0.1:{redis}/0" }}
upstreams: {{ backend: {{ targets: ["127.0.0.1:{backend}"] }} }}
routes:
  - {{ name: plain, match: {{ path: /plain }}, upstream: backend, rewrite: {{ path: /small }} }}
  - {{ name: memory, match: {{ path: /memory }}, upstream: backend, rewrite: {{ path: /small }},
      plugins: {{ cache: {{ ttl: 1h, store: memory }} }} }}
  - {{ name: redis, match: {{ path: /redis }}, upstream: backend, rewrite: {{ path: /small }},
      plugins: {{ cache: {{ ttl: 1h, store: redis }} }} }}
"""

# nginx doing the same: keep-alive upstream, and a cache for /cached.
NGINX_CONF = """
  proxy_cache_path {dir}/nginx-cache keys_zone=bench:10m;
  upstream backend {{ server 127.0.0.1:{backend}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location = /plain {{
      proxy_pass http://backend/small;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
    location = /cached {{
      proxy_pass http://backend/small;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_cache bench;
      proxy_cache_valid 200 1h;
      add_header X-Cache $upstream_cache_status;
    }}
  }}
"""


def main():
    args = arg_parser().parse_args()
    tmp = scratch_dir("portico-cache-bench-")
    backend = start_backend(tmp)
    redis = subprocess.Popen(["taskset", "-c", LOAD_CORE, "redis-server", "--port", str(REDIS), "--bind", "127.0.0.1",
                              "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    proxy = start_nginx(tmp, "proxy", NGINX_CONF.format(port=NGINX_PROXY, backend=BACKEND, dir=tmp), PROXY_CORE)
    conf = os.path.join(tmp, "portico.yaml")
    with open(conf, "w") as f:
        f.write(CONFIG.format(port=GATEWAY, backend=BACKEND, redis=REDIS))
    portico = subprocess.Popen(["taskset", "-c", PROXY_CORE, PORTICO, "run", "--config", conf, "--workers", "1",
                                "--no-watch"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for port in (BACKEND, REDIS, NGINX_PROXY, GATEWAY):
            wait_port(port)
        nginx_pid = nginx_worker(proxy)
        cases = [("backend directly", BACKEND, None, "/small"),
                 ("nginx proxying", NGINX_PROXY, nginx_pid, "/plain"),
                 ("nginx proxy_cache hit", NGINX_PROXY, nginx_pid, "/cached"),
                 ("Portico proxying", GATEWAY, portico.pid, "/plain"),
                 ("Portico memory hit", GATEWAY, portico.pid, "/memory"),
                 ("Portico Redis hit", GATEWAY, portico.pid, "/redis")]
        for _, port, _, path in cases:  # warm up, and fill the caches
            wrk(f"http://127.0.0.1:{port}{path}", args.connections, 1)
        print_table(rounds(cases, args), "Portico proxying", args, "proxies")
    finally:
        portico.terminate()
        portico.wait(timeout=40)
        for process in (proxy, backend, redis):
            process.terminate()


if __name__ == "__main__":
    main()
