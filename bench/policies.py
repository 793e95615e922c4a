#!/usr/bin/env python3
"""Portico with the policies users run, against its own plain proxying, in
one run: GET /small through

- plain: one route, no plugin, access log off (Portico's plain figure);
- policies: `key_auth` + `rate_limit` (local, by consumer, never reached) +
  a header `request_transform`, access log on (JSON lines to a file);
- jwt RS256: `jwt` with an RS256 key, a new token on every request (each
  signed ahead of the run, never repeated, so the verified-token cache never
  answers), the same rate limit and transform, access log on.

Three Portico processes, one a route, pinned to core 0 with one worker
each, the backend and wrk on core 1; cases alternate within each round;
medians. (With the jwt route in the policies route's process, the tokens it
left cached and the heap it grew cost the key_auth route 4-5% in the rounds
after it.) The tokens are signed before the run on both cores.

Usage: bench/policies.sh [--rounds 5] [--duration 5] [--tokens 150000]
"""
import base64, json, multiprocessing, os, statistics, sys, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import arg_parser, BACKEND, measure, rounds, scratch_dir, start_backend, start_portico, stop, wait_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEYS = os.path.join(ROOT, "tests", "fixtures", "jwt")
PLAIN, POLICIES, JWT = 18091, 18092, 18093
API_KEY = "bench-api-key-0123456789abcdef"

PLAIN_CONFIG = """
listeners: [{{ name: bench, addr: "127.0.0.1:{port}" }}]
access_log: {{ enabled: false }}
upstreams: {{ backend: {{ targets: ["127.0.0.1:{backend}"] }} }}
routes:
  - {{ name: plain, match: {{ path: /small }}, upstream: backend }}
"""

# The policies of the policies route (bench/policies_each.py measures them
# alone and together): a `plugins:` block's members, indented for a route.
POLICY_PLUGINS = """      key_auth: {{}}
      rate_limit: {{ limits: [ {{ requests: 1000000000, per: 1s }} ], by: consumer, store: local }}
      request_transform: {{ headers: {{ set: {{ X-Team: payments }}, remove: [ X-Debug ] }} }}
"""

POLICIES_CONFIG = """
listeners: [{{ name: bench, addr: "127.0.0.1:{port}" }}]
access_log: {{ enabled: true }}
consumers: [{{ name: bench, credentials: {{ api_keys: ["{key}"] }} }}]
upstreams: {{ backend: {{ targets: ["127.0.0.1:{backend}"] }} }}
routes:
  - name: policies
    match: {{ path: /policies }}
    upstream: backend
    rewrite: {{ path: /small }}
    plugins:
""" + POLICY_PLUGINS + """  - name: jwt
    match: {{ path: /jwt }}
    upstream: backend
    rewrite: {{ path: /small }}
    plugins:
      jwt: {{ public_key: {pem} }}
      rate_limit: {{ limits: [ {{ requests: 1000000000, per: 1s }} ], by: client_ip, store: local }}
      request_transform: {{ headers: {{ set: {{ X-Team: payments }}, remove: [ X-Debug ] }} }}
"""

# Sends the tokens of one run's own slice, one a request, in order.
TOKENS_SCRIPT = """
local tokens = {{}}
for line in io.lines("{path}") do tokens[#tokens + 1] = line end
local next_token = {first}
request = function()
  next_token = next_token + 1
  return wrk.format(nil, nil, {{ ["Authorization"] = "Bearer " .. tokens[(next_token % #tokens) + 1] }})
end
"""


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sign_range(bounds):
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding
    with open(os.path.join(KEYS, "rsa1.key"), "rb") as f:
        key = serialization.load_pem_private_key(f.read(), password=None)
    header = b64(json.dumps({"alg": "RS256", "typ": "JWT"}).encode())
    expires = int(time.time()) + 3 * 3600
    tokens = []
    for n in range(*bounds):
        claims = b64(json.dumps({"sub": "bench", "jti": str(n), "exp": expires}).encode())
        message = f"{header}.{claims}".encode()
        tokens.append(f"{header}.{claims}.{b64(key.sign(message, padding.PKCS1v15(), hashes.SHA256()))}")
    return tokens


def signed_tokens(count):
    step = count // 8 + 1
    with multiprocessing.Pool(os.cpu_count()) as pool:
        parts = pool.map(sign_range, [(i, min(i + step, count)) for i in range(0, count, step)])
    return [token for part in parts for token in part]


def main():
    parser = arg_parser()
    parser.add_argument("--tokens", type=int, default=150_000)
    args = parser.parse_args()
    tmp = scratch_dir("portico-policies-bench-")
    started = time.monotonic()
    tokens = signed_tokens(args.tokens)
    tokens_path = os.path.join(tmp, "tokens.txt")
    with open(tokens_path, "w") as f:
        f.write("\n".join(tokens) + "\n")
    print(f"signed {len(tokens):,} RS256 tokens in {time.monotonic() - started:.0f}s", file=sys.stderr)

    backend = start_backend(tmp)
    with open(os.path.join(KEYS, "rsa1.pub")) as f:
        pem = json.dumps(f.read())
    # Each route has a process of its own: the jwt run leaves its verified
    # tokens cached and the heap grown, which the key_auth route would
    # otherwise pay for in the rounds after it.
    plain, policies, jwt = (start_portico(tmp, name, config.format(port=port, backend=BACKEND, key=API_KEY, pem=pem))
                            for name, port, config in (("plain", PLAIN, PLAIN_CONFIG),
                                                       ("policies", POLICIES, POLICIES_CONFIG),
                                                       ("jwt", JWT, POLICIES_CONFIG)))
    try:
        for port in (BACKEND, PLAIN, POLICIES, JWT):
            wait_port(port)
        slice_size = len(tokens) // (args.rounds + 1)

        def script(run):
            path = os.path.join(tmp, f"tokens-{run}.lua")
            with open(path, "w") as f:
                f.write(TOKENS_SCRIPT.format(path=tokens_path, first=run * slice_size))
            return path

        cases = [("plain", PLAIN, plain.pid, "/small", lambda run: []),
                 ("key_auth + rate_limit + transform + log", POLICIES, policies.pid, "/policies",
                  lambda run: ["-H", f"X-API-Key: {API_KEY}"]),
                 ("jwt RS256, new token each request, + rate_limit + transform + log", JWT, jwt.pid,
                  "/jwt", lambda run: ["-s", script(run)])]
        for name, port, pid, path, options in cases:  # warm-up (the jwt one on the last slice)
            measure((name, port, pid), path, args.connections, 1, extra=options(args.rounds))
        runs = rounds(cases, args)
        jwt_sent = max(r["rps"] for r in runs[cases[2][0]]) * args.duration
        if jwt_sent > slice_size:
            print(f"warning: a jwt run sent more requests than its {slice_size:,} tokens (some were verified "
                  f"from the cache); raise --tokens", file=sys.stderr)

        base = statistics.median(r["rps"] for r in runs["plain"])
        print(f"Medians of {args.rounds} rounds of {args.duration}s, wrk -t1 -c{args.connections}, each Portico "
              f"pinned to one core with one worker.\n")
        print("| route | req/s | vs plain | p50 ms | p99 ms | proxy CPU µs/req | proxy busy |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for name, measured in runs.items():
            med = lambda key: statistics.median(r[key] for r in measured)
            print(f"| {name} | {med('rps'):,.0f} | {med('rps') / base:.2f}x | {med('p50'):.2f} | {med('p99'):.2f} | "
                  f"{med('cpu_us'):.1f} | {med('busy'):.0%} |")
    finally:
        stop([plain, policies, jwt], backend)


if __name__ == "__main__":
    main()
