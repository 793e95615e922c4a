#!/usr/bin/env python3
"""Instructions per proxied request, counted by valgrind (callgrind), for
one or more Portico binaries: a figure that neither a busy neighbour nor the
CPU's frequency moves, for A/B checks on shared machines where requests/s
swing by tens of percent between rounds.

Each binary serves GET /small through one route to the nginx backend, one
worker, under callgrind; h2load sends FEW and then MANY requests on one
keep-alive connection in two runs, and the difference of the two totals,
divided by the difference of the counts, is the cost of one request with
start-up and shutdown taken out.

Usage: bench/instructions.py BINARY [BINARY...] [--few 500] [--many 2500] [--top N] [--policies | --cache]

--policies counts the route of bench/policies.py instead: key_auth, a rate
limit, a header transform and the access log on. --cache counts hits of the
memory cache (the first request fills it).

--top N also prints, for each binary, the N functions with the most
instructions of their own in the MANY run (callgrind_annotate), per request,
and where that run's callgrind file is (`callgrind_annotate --inclusive=yes
FILE` shows what each function costs with what it calls).
"""
import argparse, json, os, re, signal, subprocess, sys, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ab import CONFIG
import policies
from bench import BACKEND, scratch_dir, start_backend, wait_port

GATEWAY = 18088

CACHE_CONFIG = """
listeners: [{{ name: bench, addr: "127.0.0.1:{port}" }}]
access_log: {{ enabled: false }}
upstreams: {{ backend: {{ targets: ["127.0.0.1:{backend}"] }} }}
routes:
  - {{ name: cached, match: {{ path: / }}, upstream: backend, plugins: {{ cache: {{ ttl: 1h, store: memory }} }} }}
"""


def total_instructions(binary, conf, requests, tmp, top=0, target=("/small", [])):
    out_file = os.path.join(tmp, f"callgrind.{os.getpid()}.{time.monotonic_ns()}")
    proxy = subprocess.Popen(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out_file}",
                              binary, "run", "--config", conf, "--workers", "1", "--no-watch"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(600):
            try:
                wait_port(GATEWAY)
                break
            except SystemExit:
                continue
        path, headers = target
        subprocess.run(["h2load", "--h1", "-n", str(requests), "-c", "1", *headers, f"http://127.0.0.1:{GATEWAY}{path}"],
                       capture_output=True, check=True)
    finally:
        proxy.send_signal(signal.SIGTERM)
        proxy.wait(timeout=120)
    with open(out_file) as f:
        text = f.read()
    found = re.search(r"^(?:summary|totals):\s+(\d+)", text, re.M)
    if not found:
        sys.exit(f"no instruction total in {out_file}")
    if top:
        annotated = subprocess.run(["callgrind_annotate", "--inclusive=no", f"--threshold=100", out_file],
                                   capture_output=True, text=True, check=True).stdout
        rows = re.findall(r"^\s*([\d,]+)\s+\([^)]*\)\s+(?:\*\s+)?(\S.*)$", annotated, re.M)
        for count, name in rows[1:top + 1]:
            print(f"  {int(count.replace(',', '')) / requests:9,.0f}  {name[:150]}")
        print(f"  callgrind file: {out_file}")
    return int(found.group(1))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("binaries", nargs="+")
    parser.add_argument("--few", type=int, default=500)
    parser.add_argument("--many", type=int, default=2500)
    parser.add_argument("--top", type=int, default=0)
    routes = parser.add_mutually_exclusive_group()
    routes.add_argument("--policies", action="store_true")
    routes.add_argument("--cache", action="store_true")
    args = parser.parse_args()
    tmp = scratch_dir("portico-instructions-")
    backend = start_backend(tmp)
    conf = os.path.join(tmp, "portico.yaml")
    with open(conf, "w") as f:
        if args.policies:
            f.write(policies.POLICIES_CONFIG.format(port=GATEWAY, backend=BACKEND, key=policies.API_KEY,
                                                   pem=json.dumps(open(os.path.join(policies.KEYS, "rsa1.pub")).read())))
        elif args.cache:
            f.write(CACHE_CONFIG.format(port=GATEWAY, backend=BACKEND))
        else:
            f.write(CONFIG.format(port=GATEWAY, backend=BACKEND))
    target = ("/policies", ["-H", f"X-API-Key: {policies.API_KEY}"]) if args.policies else ("/small", [])
    wait_port(BACKEND)
    try:
        for binary in args.binaries:
            few = total_instructions(binary, conf, args.few, tmp, target=target)
            many = total_instructions(binary, conf, args.many, tmp, args.top, target)
            per_request = (many - few) / (args.many - args.few)
            print(f"{binary}: {per_request:,.0f} instructions per request")
    finally:
        backend.terminate()


if __name__ == "__main__":
    main()
