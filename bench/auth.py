#!/usr/bin/env python3
"""Authentication cost: one route without authentication and the same route
with `key_auth`, `jwt` HS256 and `jwt` RS256, in one run.

Portico is pinned to core 0 with one worker; the nginx backend and wrk share
core 1. The four routes alternate within each round; figures are medians.
Each run reuses one token (as a client does), so after its first request the
JWT routes are served from the verified-token cache; `--fresh-tokens` is not
offered because wrk sends fixed headers. Reports requests/s, Portico's CPU per
request, and the ratio to the unauthenticated route.

Usage: bench/auth.sh [--rounds 5] [--duration 5]
"""
import base64, hashlib, hmac, json, os, subprocess, sys, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import (arg_parser, BACKEND, PORTICO, PROXY_CORE, print_table, rounds, scratch_dir, start_backend,
                   wait_port, wrk)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEYS = os.path.join(ROOT, "tests", "fixtures", "jwt")
GATEWAY = 18083
API_KEY = "bench-api-key-0123456789abcdef"
SECRET = "bench-hmac-secret-of-at-least-32-bytes"

CONFIG = """
listeners: [{{ name: bench, addr: "127.0.0.1:{port}" }}]
access_log: {{ enabled: false }}
consumers: [{{ name: bench, credentials: {{ api_keys: ["{key}"] }} }}]
upstreams: {{ backend: {{ targets: ["127.0.0.1:{backend}"] }} }}
routes:
  - {{ name: none, match: {{ path: /none }}, upstream: backend, rewrite: {{ path: /small }} }}
  - {{ name: key, match: {{ path: /key }}, upstream: backend, rewrite: {{ path: /small }}, plugins: {{ key_auth: {{}} }} }}
  - {{ name: hs256, match: {{ path: /hs256 }}, upstream: backend, rewrite: {{ path: /small }}, plugins: {{ jwt: {{ secret: "{secret}" }} }} }}
  - {{ name: rs256, match: {{ path: /rs256 }}, upstream: backend, rewrite: {{ path: /small }}, plugins: {{ jwt: {{ public_key: {pem} }} }} }}
"""


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def token(alg):
    header = b64(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    claims = b64(json.dumps({"sub": "bench", "exp": int(time.time()) + 3600}).encode())
    message = f"{header}.{claims}".encode()
    if alg == "HS256":
        signature = hmac.new(SECRET.encode(), message, hashlib.sha256).digest()
    else:
        signature = subprocess.run(["openssl", "dgst", "-sha256", "-sign", os.path.join(KEYS, "rsa1.key")],
                                   input=message, capture_output=True, check=True).stdout
    return f"{message.decode()}.{b64(signature)}"


def main():
    parser = arg_parser()
    args = parser.parse_args()
    tmp = scratch_dir("portico-auth-bench-")
    backend = start_backend(tmp)
    with open(os.path.join(KEYS, "rsa1.pub")) as f:
        pem = json.dumps(f.read())
    conf = os.path.join(tmp, "portico.yaml")
    with open(conf, "w") as f:
        f.write(CONFIG.format(port=GATEWAY, key=API_KEY, backend=BACKEND, secret=SECRET, pem=pem))
    portico = subprocess.Popen(["taskset", "-c", PROXY_CORE, PORTICO, "run", "--config", conf, "--workers", "1",
                                "--no-watch"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(BACKEND)
        wait_port(GATEWAY)
        cases = [
            ("no authentication", "/none", None),
            ("key_auth", "/key", f"X-API-Key: {API_KEY}"),
            ("jwt HS256", "/hs256", f"Authorization: Bearer {token('HS256')}"),
            ("jwt RS256", "/rs256", f"Authorization: Bearer {token('RS256')}"),
        ]
        cases = [(name, GATEWAY, portico.pid, path, ["-H", header] if header else []) for name, path, header in cases]
        for _, port, _, path, options in cases:  # warm-up
            wrk(f"http://127.0.0.1:{port}{path}", args.connections, 1, options)
        print_table(rounds(cases, args), "no authentication", args, "Portico")
    finally:
        portico.terminate()
        portico.wait(timeout=40)
        backend.terminate()
        backend.wait(timeout=10)


if __name__ == "__main__":
    main()
