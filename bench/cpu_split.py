#!/usr/bin/env python3
"""User and system CPU time per request, nginx vs Portico, on plain proxying
(GET /small, wrk -c32, alternating rounds): which side of the syscall line
a gap between the two is on. Both proxies pinned to core 0 with one worker,
wrk and the nginx backend on core 1, as in bench.py.

Usage: bench/cpu_split.py [BINARY] [--rounds 3] [--duration 3]
"""
import os, subprocess, sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench
from bench import (BACKEND, VIA_NGINX, PORTICO_CONF, PROXY_CONF, PROXY_CORE, TICK, arg_parser, nginx_worker,
                   scratch_dir, start_backend, start_nginx, wait_port, wrk)

GATEWAY = 18096


def times(pid):
    """User and system seconds the process has used."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) / TICK, int(fields[12]) / TICK


def main():
    parser = arg_parser()
    parser.set_defaults(rounds=3, duration=3)
    parser.add_argument("binary", nargs="?", default=bench.PORTICO)
    args = parser.parse_args()
    tmp = scratch_dir("portico-cpu-split-")
    backend = start_backend(tmp)
    nginx = start_nginx(tmp, "proxy", PROXY_CONF.format(port=VIA_NGINX, backend=BACKEND), PROXY_CORE)
    conf = os.path.join(tmp, "portico.yaml")
    with open(conf, "w") as f:
        f.write(PORTICO_CONF.format(port=GATEWAY, backend=BACKEND, access_log="false"))
    portico = subprocess.Popen(["taskset", "-c", PROXY_CORE, args.binary, "run", "--config", conf, "--workers", "1",
                                "--no-watch"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for port in (BACKEND, VIA_NGINX, GATEWAY):
            wait_port(port)
        targets = [("nginx", VIA_NGINX, nginx_worker(nginx)), ("portico", GATEWAY, portico.pid)]
        print("| round | proxy | req/s | user µs/req | system µs/req |\n|---:|---|---:|---:|---:|")
        for round_ in range(args.rounds):
            for name, port, pid in targets:
                user, system = times(pid)
                requests, rps, _, _ = wrk(f"http://127.0.0.1:{port}/small", args.connections, args.duration)
                user_after, system_after = times(pid)
                print(f"| {round_ + 1} | {name} | {rps:,.0f} | {(user_after - user) * 1e6 / requests:.2f} | "
                      f"{(system_after - system) * 1e6 / requests:.2f} |")
    finally:
        for process in (portico, nginx, backend):
            process.terminate()


if __name__ == "__main__":
    main()
