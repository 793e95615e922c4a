#!/usr/bin/env python3
"""Where Portico's time goes on plain proxying: `perf record` (cpu-clock,
which works on VMs without hardware counters) on the one worker while wrk
sends GET /small through one route, then the top entries by self time, and
the syscalls per request from `strace -c`.

--policies profiles the route of bench/policies.py instead: key_auth, a rate
limit, a header transform and the access log on; --cache hits of the memory
cache. Unlike callgrind (bench/instructions.py), perf sees the CPU's own SHA
and AES instructions. --nginx profiles nginx's one worker proxying the same
GET /small instead (bench.py's config), so that the kernel's share of the
two can be read side by side.

--strace-connections N counts the syscalls over N keep-alive connections at
once (default 1): under load an event-loop wake-up serves several of them, so
what is left a request is the reads and writes.

Usage: bench/profile.py [BINARY] [--seconds 8] [--connections 32] [--top 30] [--strace-connections 1] [--policies | --cache | --nginx]
"""
import argparse, os, subprocess, sys, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ab import write_config
from bench import (BACKEND, LOAD_CORE, PORTICO, PROXY_CONF, PROXY_CORE, nginx_worker, scratch_dir, start_backend,
                   start_nginx, wait_port)

GATEWAY = 18089


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("binary", nargs="?", default=PORTICO)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--strace-connections", type=int, default=1)
    routes = parser.add_mutually_exclusive_group()
    routes.add_argument("--policies", action="store_true")
    routes.add_argument("--cache", action="store_true")
    routes.add_argument("--nginx", action="store_true")
    args = parser.parse_args()
    tmp = scratch_dir("portico-profile-")
    backend = start_backend(tmp)
    conf = os.path.join(tmp, "portico.yaml")
    path, headers = write_config(conf, GATEWAY, "policies" if args.policies else "cache" if args.cache else "plain")
    path = path or "/small"
    wait_port(BACKEND)
    if args.nginx:
        proxy = start_nginx(tmp, "proxy", PROXY_CONF.format(port=GATEWAY, backend=BACKEND), PROXY_CORE)
    else:
        proxy = subprocess.Popen(["taskset", "-c", PROXY_CORE, args.binary, "run", "--config", conf, "--workers", "1",
                                  "--no-watch"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{GATEWAY}{path}"
    load = ["taskset", "-c", LOAD_CORE, "wrk", "-t1", f"-c{args.connections}", f"-d{args.seconds + 2}s", *headers, url]
    data = os.path.join(tmp, "perf.data")
    try:
        wait_port(GATEWAY)
        worker = nginx_worker(proxy) if args.nginx else proxy.pid
        subprocess.run(["taskset", "-c", LOAD_CORE, "wrk", "-t1", "-c4", "-d1s", *headers, url], capture_output=True)
        wrk = subprocess.Popen(load, stdout=subprocess.PIPE, text=True)
        time.sleep(1)
        subprocess.run(["perf", "record", "-e", "cpu-clock", "-F", "4999", "-g", "-o", data, "-p", str(worker),
                        "--", "sleep", str(args.seconds)], capture_output=True, check=True)
        wrk.wait()
        report = subprocess.run(["perf", "report", "-i", data, "--no-children", "--sort", "symbol",
                                 "--stdio", "-g", "none", "--percent-limit", "0.5"],
                                capture_output=True, text=True, check=True).stdout
        rows = [line for line in report.splitlines() if line.strip() and not line.startswith("#")]
        by_dso = subprocess.run(["perf", "report", "-i", data, "--no-children", "--sort", "dso", "--stdio",
                                 "-g", "none"], capture_output=True, text=True, check=True).stdout
        kernel = sum(float(line.split()[0].rstrip("%")) for line in by_dso.splitlines()
                     if "[kernel" in line and not line.startswith("#"))
        print(f"{'nginx' if args.nginx else 'Portico'}: perf, cpu-clock, {args.seconds}s of wrk -c{args.connections} GET {path}, self time ({kernel:.1f}% in the kernel):")
        for row in rows[: args.top]:
            # "10.99%  [k] symbol   -  -": the share, the side, the symbol.
            share, side, *symbol = row.split()
            print(f"  {share:>7} {side} {' '.join(w for w in symbol if w != '-')}")
        # Syscalls per request: strace on the worker for a counted run.
        strace_out = os.path.join(tmp, "strace.txt")
        tracer = subprocess.Popen(["strace", "-c", "-f", "-o", strace_out, "-p", str(worker)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        connections = args.strace_connections
        requests = 20000 if connections == 1 else 40000
        subprocess.run(["taskset", "-c", LOAD_CORE, "h2load", "--h1", "-n", str(requests), "-c", str(connections),
                        *headers, url], capture_output=True, check=True)
        tracer.terminate()
        tracer.wait(timeout=10)
        with open(strace_out) as f:
            lines = f.read().splitlines()
        total = next((l for l in lines if l.strip().endswith("total")), None)
        if total:
            calls = int(total.split()[3])  # % time, seconds, usecs/call, calls, [errors,] total
            on = "one keep-alive connection" if connections == 1 else f"{connections} keep-alive connections"
            print(f"\nsyscalls: {calls / requests:.2f} per request on {on} ({requests} requests;"
                  " the count includes the idle timer thread's)")
            for line in lines[2:12]:
                print("  " + line)
    finally:
        proxy.terminate()
        proxy.wait(timeout=30)
        backend.terminate()


if __name__ == "__main__":
    main()
