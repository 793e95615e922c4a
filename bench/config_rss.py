#!/usr/bin/env python3
"""Memory of a large config at rest: the 10,000-route, 10,000-consumer
config of bench/scale.py, started by each binary in turn (alternating, each
start its own process, one worker), and VmRSS read a second after the port
opens; medians. No load is sent: this is the config's own cost.

--env NAME=VALUE starts the binaries with that in the environment (for
example MALLOC_MMAP_THRESHOLD_=131072, to see what glibc keeps after the
read). --massif also starts each binary once under valgrind's massif and
prints the heap's peak, what it holds once the port is open, and the massif
file (`ms_print FILE` shows where the peak's bytes were allocated).

Usage: bench/config_rss.py BINARY [BINARY...] [--rounds 2] [--routes 10000] [--env NAME=VALUE] [--massif]
"""
import argparse, os, re, signal, statistics, subprocess, sys, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import rss_mib, scratch_dir, wait_port
import scale

PORT, ADMIN = 18300, 18301


def started_rss(binary, conf, env):
    process = subprocess.Popen([binary, "run", "--config", conf, "--workers", "1", "--no-watch"],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(PORT, 60)
        time.sleep(1)
        return rss_mib(process.pid)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)


def massif(binary, conf, tmp):
    """(peak heap, heap while serving) in MB, and the file, from massif's snapshots: the
    serving figure is the heap through the longest stretch without a
    snapshot (massif takes them as memory moves: the idle gateway before it
    was told to stop)."""
    out = os.path.join(tmp, f"massif.{time.monotonic_ns()}")
    process = subprocess.Popen(["valgrind", "--tool=massif", "--time-unit=ms", f"--massif-out-file={out}", binary,
                                "run", "--config", conf, "--workers", "1", "--no-watch"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(PORT, 600)
        time.sleep(5)
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=120)
    with open(out) as f:
        snapshots = [(int(t), int(heap) + int(extra)) for t, heap, extra in
                     re.findall(r"time=(\d+)\nmem_heap_B=(\d+)\nmem_heap_extra_B=(\d+)", f.read())]
    idle = max(range(len(snapshots) - 1), key=lambda i: snapshots[i + 1][0] - snapshots[i][0])
    return max(heap for _, heap in snapshots) / 1e6, snapshots[idle][1] / 1e6, out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("binaries", nargs="+")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--routes", type=int, default=10_000)
    parser.add_argument("--env", action="append", default=[])
    parser.add_argument("--massif", action="store_true")
    args = parser.parse_args()
    tmp = scratch_dir("portico-config-rss-")
    text, _, _ = scale.config(args.routes, PORT, ADMIN)
    conf = os.path.join(tmp, "routes.yaml")  # JSON is YAML
    with open(conf, "w") as f:
        f.write(text)
    env = dict(os.environ)
    for pair in args.env:
        name, _, value = pair.partition("=")
        env[name] = value
    rss = {binary: [] for binary in args.binaries}
    for _ in range(args.rounds):
        for binary in args.binaries:
            rss[binary].append(started_rss(binary, conf, env))
    print(f"{args.routes:,} routes and {scale.CONSUMERS:,} consumers, VmRSS a second after the port opened, "
          f"median of {args.rounds}{', with ' + ' '.join(args.env) if args.env else ''}:")
    for binary, values in rss.items():
        line = f"  {binary}: {statistics.median(values):.1f} MiB"
        if args.massif:
            peak, serving, out = massif(binary, conf, tmp)
            line += f"; heap (massif) peak {peak:.1f} MB, serving {serving:.1f} MB ({out})"
        print(line)


if __name__ == "__main__":
    main()
