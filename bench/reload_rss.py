#!/usr/bin/env python3
"""RSS of the 10,000-route, 10,000-consumer config of bench/scale.py across
reloads: VmRSS a second after start, then 1.5 s after each of N reloads
through the admin API (no load), for each binary given. A reload builds the
new config while the old one serves; what the allocator cannot hand back
afterwards shows here as growth from one reload to the next.

Usage: bench/reload_rss.py BINARY [BINARY...] [--reloads 8]
"""
import argparse, os, subprocess, sys, time, urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import scale
from bench import PROXY_CORE, rss_mib, scratch_dir, wait_port

PORT, ADMIN = 18310, 18311


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("binaries", nargs="+")
    parser.add_argument("--reloads", type=int, default=8)
    args = parser.parse_args()
    tmp = scratch_dir("portico-reload-rss-")
    text, _, _ = scale.config(10_000, PORT, ADMIN)
    conf = os.path.join(tmp, "routes-10000.yaml")  # JSON is YAML
    with open(conf, "w") as f:
        f.write(text)
    for binary in args.binaries:
        proxy = subprocess.Popen(["taskset", "-c", PROXY_CORE, binary, "run", "--config", conf, "--workers", "1",
                                  "--no-watch"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_port(PORT)
            time.sleep(1)
            seen = [rss_mib(proxy.pid)]
            for _ in range(args.reloads):
                request = urllib.request.Request(f"http://127.0.0.1:{ADMIN}/reload", method="POST",
                                                 headers={"Authorization": f"Bearer {scale.TOKEN}"})
                urllib.request.urlopen(request, timeout=120).read()
                time.sleep(1.5)
                seen.append(rss_mib(proxy.pid))
            print(f"{binary}: RSS MiB at start, then after each reload: " + " ".join(f"{m:.1f}" for m in seen))
        finally:
            proxy.terminate()
            proxy.wait(timeout=60)


if __name__ == "__main__":
    main()
