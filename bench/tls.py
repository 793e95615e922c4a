#!/usr/bin/env python3
"""TLS termination: HTTPS through Portico and through nginx to the same
plain backend, with HTTP/1.1 keep-alive connections (wrk), with a new
connection (a full TLS handshake) for every request (wrk), and with HTTP/2
(h2load, 10 streams a connection), in one run. Certificate: the self-signed
ECDSA P-256 one in examples/certs. TLS 1.3 on both.

The proxies are pinned to core 0 with one worker; the backend and wrk share
core 1; targets alternate within each round; medians.

Usage: bench/tls.sh [--rounds 5] [--duration 5]
"""
import os, subprocess, sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import (arg_parser, BACKEND, PORTICO, PROXY_CORE, nginx_worker, print_table, rounds, scratch_dir,
                   start_backend, start_nginx, wait_port, wrk)

PORTICO_TLS, NGINX_TLS = 18090, 18091
STREAMS = 10
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CERT, KEY = (os.path.join(ROOT, "examples/certs", f) for f in ("localhost.pem", "localhost.key"))

CONFIG = """
listeners:
  - {{ name: https, addr: "127.0.0.1:{port}", tls: {{ certificates: [ {{ cert: "{cert}", key: "{key}" }} ] }} }}
access_log: {{ enabled: false }}
upstreams: {{ backend: {{ targets: ["127.0.0.1:{backend}"] }} }}
routes:
  - {{ name: all, match: {{ path: / }}, upstream: backend }}
"""

NGINX_CONF = """
  upstream backend {{ server 127.0.0.1:{backend}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{port} ssl http2 backlog=4096;
    ssl_certificate {cert};
    ssl_certificate_key {key};
    ssl_protocols TLSv1.3;
    location / {{
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
  }}
"""


def main():
    args = arg_parser().parse_args()
    tmp = scratch_dir("portico-tls-bench-")
    backend = start_backend(tmp)
    proxy = start_nginx(tmp, "proxy", NGINX_CONF.format(port=NGINX_TLS, backend=BACKEND, cert=CERT, key=KEY), PROXY_CORE)
    conf = os.path.join(tmp, "portico.yaml")
    with open(conf, "w") as f:
        f.write(CONFIG.format(port=PORTICO_TLS, backend=BACKEND, cert=CERT, key=KEY))
    portico = subprocess.Popen(["taskset", "-c", PROXY_CORE, PORTICO, "run", "--config", conf, "--workers", "1",
                                "--no-watch"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for port in (BACKEND, NGINX_TLS, PORTICO_TLS):
            wait_port(port)
        nginx_pid = nginx_worker(proxy)
        # `Connection: close`: wrk opens a new connection, a full handshake, for each request.
        close = ("-H", "Connection: close")
        cases = [("nginx, keep-alive", NGINX_TLS, nginx_pid, "/small", ()),
                 ("Portico, keep-alive", PORTICO_TLS, portico.pid, "/small", ()),
                 ("nginx, a handshake a request", NGINX_TLS, nginx_pid, "/small", close),
                 ("Portico, a handshake a request", PORTICO_TLS, portico.pid, "/small", close),
                 # HTTP/2 by ALPN: h2load, `STREAMS` requests in flight on each connection.
                 ("nginx, HTTP/2", NGINX_TLS, nginx_pid, "/small", STREAMS, "h2load"),
                 ("Portico, HTTP/2", PORTICO_TLS, portico.pid, "/small", STREAMS, "h2load")]
        for _, port, _, path, options, *_ in cases[:4]:
            wrk(f"https://127.0.0.1:{port}{path}", args.connections, 1, options)
        print_table(rounds(cases, args, scheme="https"), "nginx, keep-alive", args, "proxies")
    finally:
        portico.terminate()
        portico.wait(timeout=40)
        for process in (proxy, backend):
            process.terminate()


if __name__ == "__main__":
    main()
