#!/usr/bin/env python3
"""A/B of two Portico binaries on plain proxying (GET /small through one
route), to find which change moved a figure: the binaries alternate within
each round, one worker pinned to the proxy core, the nginx backend and wrk
on the other; medians and the paired rounds are printed, of requests/s and
of the proxy's own CPU time per request (user+system from /proc), which a
busy neighbour on a shared machine disturbs far less than requests/s.

--h2 serves the listener over TLS and loads it with h2load instead, HTTP/2 with
10 streams a connection (what bench/tls.py's HTTP/2 row sends). --cache
compares hits of the memory cache instead (the first request fills it);
--policies the route of bench/policies.py (key_auth, a rate limit, a header
transform, the access log on).

Usage: bench/ab.py OLD_BINARY NEW_BINARY [--connections 1] [--rounds 8] [--duration 5] [--h2 | --cache | --policies] [--path /16k]
Build an older commit into its own binary with, for example:
  git worktree add /tmp/old COMMIT && (cd /tmp/old && cargo build --release) && cp /tmp/old/target/release/portico /tmp/portico-old
"""
import argparse, json, os, statistics, subprocess, sys, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import BACKEND, LOAD_CORE, PROXY_CORE, cpu_seconds, h2load, scratch_dir, start_backend, wait_port
import policies, tls

GATEWAY = 18087
CONFIG = """
listeners: [{{ name: bench, addr: "127.0.0.1:{port}" }}]
access_log: {{ enabled: false }}
upstreams: {{ backend: {{ targets: ["127.0.0.1:{backend}"] }} }}
routes:
  - {{ name: plain, match: {{ path: / }}, upstream: backend }}
"""

CACHE_CONFIG = """
listeners: [{{ name: bench, addr: "127.0.0.1:{port}" }}]
access_log: {{ enabled: false }}
upstreams: {{ backend: {{ targets: ["127.0.0.1:{backend}"] }} }}
routes:
  - {{ name: cached, match: {{ path: / }}, upstream: backend, plugins: {{ cache: {{ ttl: 1h, store: memory }} }} }}
"""


def write_config(conf, port, route):
    """Portico's config for `route` (plain, h2, cache or policies), and the
    path and headers its requests take."""
    with open(conf, "w") as f:
        if route == "h2":
            f.write(tls.CONFIG.format(port=port, backend=BACKEND, cert=tls.CERT, key=tls.KEY))
        elif route == "cache":
            f.write(CACHE_CONFIG.format(port=port, backend=BACKEND))
        elif route == "policies":
            f.write(policies.POLICIES_CONFIG.format(port=port, backend=BACKEND, key=policies.API_KEY,
                                                   pem=json.dumps(open(os.path.join(policies.KEYS, "rsa1.pub")).read())))
            return "/policies", ["-H", f"X-API-Key: {policies.API_KEY}"]
        else:
            f.write(CONFIG.format(port=port, backend=BACKEND))
    return None, []


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("old")
    parser.add_argument("new")
    parser.add_argument("--connections", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--duration", type=int, default=5)
    routes = parser.add_mutually_exclusive_group()
    routes.add_argument("--h2", action="store_true")
    routes.add_argument("--cache", action="store_true")
    routes.add_argument("--policies", action="store_true")
    parser.add_argument("--path", default="/small", help="/small or /16k, from the nginx backend")
    args = parser.parse_args()
    tmp = scratch_dir("portico-ab-")
    backend = start_backend(tmp)
    conf = os.path.join(tmp, "portico.yaml")
    route = "h2" if args.h2 else "cache" if args.cache else "policies" if args.policies else "plain"
    path, headers = write_config(conf, GATEWAY, route)
    path = path or args.path
    wait_port(BACKEND)
    results = {"old": [], "new": []}
    cpu = {"old": [], "new": []}
    try:
        for _ in range(args.rounds):
            for name in ("old", "new"):
                proxy = subprocess.Popen(["taskset", "-c", PROXY_CORE, getattr(args, name), "run", "--config", conf,
                                          "--workers", "1", "--no-watch"],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                try:
                    wait_port(GATEWAY)
                    before = cpu_seconds(proxy.pid)
                    if args.h2:
                        served, rps, _, _ = h2load(f"https://127.0.0.1:{GATEWAY}{path}", args.connections,
                                                   args.duration, tls.STREAMS)
                    else:
                        out = subprocess.run(["taskset", "-c", LOAD_CORE, "wrk", "-t1", f"-c{args.connections}",
                                              f"-d{args.duration}s", *headers, f"http://127.0.0.1:{GATEWAY}{path}"],
                                             capture_output=True, text=True, check=True).stdout
                        rps = float(next(l for l in out.splitlines() if l.startswith("Requests/sec")).split()[1])
                        served = int(next(l for l in out.splitlines() if "requests in" in l).split()[0])
                    used = cpu_seconds(proxy.pid) - before
                    results[name].append(rps)
                    cpu[name].append(used / max(served, 1) * 1e6)
                finally:
                    proxy.terminate()
                    proxy.wait(timeout=40)
                time.sleep(0.3)
    finally:
        backend.terminate()
    old, new = results["old"], results["new"]
    print(f"req/s median: old {statistics.median(old):,.0f}, new {statistics.median(new):,.0f} "
          f"({statistics.median(new) / statistics.median(old):.2f}x)")
    print("paired rounds (old, new):", ", ".join(f"({a:,.0f}, {b:,.0f})" for a, b in zip(old, new)))
    print(f"new ahead in {sum(b > a for a, b in zip(old, new))} of {len(old)} rounds")
    old_cpu, new_cpu = cpu["old"], cpu["new"]
    print(f"proxy CPU per request, median: old {statistics.median(old_cpu):.1f} us, "
          f"new {statistics.median(new_cpu):.1f} us ({statistics.median(new_cpu) / statistics.median(old_cpu):.2f}x)")
    print("paired rounds (old, new):", ", ".join(f"({a:.1f}, {b:.1f})" for a, b in zip(old_cpu, new_cpu)))
    print(f"new cheaper in {sum(b < a for a, b in zip(old_cpu, new_cpu))} of {len(old_cpu)} rounds")


if __name__ == "__main__":
    main()
