#!/usr/bin/env python3
"""The tail at one connection, run after run: nginx and Portico proxying
GET /small, alternating, wrk -c1 --latency for a few seconds each, and each
run's percentiles and maximum printed, so that a run whose p99 stands out
shows as that run and not as a median. (bench.py's one-connection row gives
medians of three.)

Each proxy is pinned to one core with one worker, wrk and the backend to the
other, as in bench.py.

Usage: bench/tail.py [BINARY] [--runs 10] [--duration 4]
"""
import argparse, os, re, subprocess, sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench
from bench import (BACKEND, LOAD_CORE, PORTICO, PROXY_CORE, VIA_NGINX, VIA_PORTICO, scratch_dir, start_backend,
                   start_nginx, stop, wait_port)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("binary", nargs="?", default=PORTICO)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--duration", type=int, default=4)
    args = parser.parse_args()
    tmp = scratch_dir("portico-tail-")
    backend = start_backend(tmp)
    processes = [start_nginx(tmp, "proxy", bench.PROXY_CONF.format(port=VIA_NGINX, backend=BACKEND), PROXY_CORE)]
    conf = os.path.join(tmp, "portico.yaml")
    with open(conf, "w") as f:
        f.write(bench.PORTICO_CONF.format(port=VIA_PORTICO, backend=BACKEND, access_log="false"))
    processes.append(subprocess.Popen(["taskset", "-c", PROXY_CORE, args.binary, "run", "--config", conf,
                                       "--workers", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    try:
        for port in (BACKEND, VIA_NGINX, VIA_PORTICO):
            wait_port(port)
        print("| run | proxy | p50 | p75 | p90 | p99 | max |")
        print("|---:|---|---:|---:|---:|---:|---:|")
        for run in range(1, args.runs + 1):
            for name, port in (("nginx", VIA_NGINX), ("portico", VIA_PORTICO)):
                out = subprocess.run(["taskset", "-c", LOAD_CORE, "wrk", "-t1", "-c1", f"-d{args.duration}s",
                                      "--latency", f"http://127.0.0.1:{port}/small"],
                                     capture_output=True, text=True, check=True).stdout
                percentiles = dict(re.findall(r"^\s+(50|75|90|99)%\s+(\S+)", out, re.M))
                most = re.search(r"Latency\s+\S+\s+\S+\s+(\S+)", out).group(1)
                print(f"| {run} | {name} | " + " | ".join(percentiles[p] for p in ("50", "75", "90", "99"))
                      + f" | {most} |")
    finally:
        stop(processes, backend)


if __name__ == "__main__":
    main()
