#!/usr/bin/env python3
"""What one proxied request copies with memcpy: the moves of the request's
state between the futures of its path (requests, responses, parts) and the
small copies of writing heads. gdb breaks on glibc's memcpy in a running
worker for one keep-alive GET /small after some warm-up requests, and notes
each call's size and caller.

Usage: bench/moves.py BINARY [BINARY...] [--list] [--cache]

--list prints every copy of 64 bytes or more with the line that made it.
--cache follows a hit of the memory cache instead (the warm-up fills it).
"""
import argparse, os, re, shutil, socket, subprocess, sys, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ab import write_config
from bench import BACKEND, scratch_dir, start_backend, wait_port

GATEWAY = 18097
REQUEST = b"GET /small HTTP/1.1\r\nHost: localhost\r\nUser-Agent: moves\r\nAccept: */*\r\n\r\n"
GDB_COMMANDS = """set pagination off
break __memcpy_avx512_unaligned_erms
break __memcpy_avx_unaligned_erms
break __memmove_avx_unaligned_erms
commands 1-3
silent
printf "SIZE %d\\n", $rdx
bt 2
continue
end
continue
"""


def copies(binary, tmp, conf):
    """(size, caller) of each memcpy call one request makes."""
    proxy = subprocess.Popen([binary, "run", "--config", conf, "--workers", "1", "--no-watch"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(GATEWAY)
        client = socket.create_connection(("127.0.0.1", GATEWAY))
        for _ in range(20):
            client.sendall(REQUEST)
            client.recv(65536)
        commands = os.path.join(tmp, "gdb-commands")
        with open(commands, "w") as f:
            f.write(GDB_COMMANDS)
        out = os.path.join(tmp, "gdb.out")
        gdb = subprocess.Popen(["gdb", "-p", str(proxy.pid), "-batch", "-x", commands],
                               stdout=open(out, "w"), stderr=subprocess.DEVNULL)
        time.sleep(3)  # attached, breakpoints set
        client.sendall(REQUEST)
        client.settimeout(60)
        client.recv(65536)
        time.sleep(1)
        client.close()
    finally:
        proxy.terminate()
        proxy.wait(timeout=60)
    gdb.wait(timeout=60)
    calls = []
    for block in open(out).read().split("SIZE ")[1:]:
        lines = block.split("\n")
        caller = next((l for l in lines[1:] if l.startswith("#1")), "")
        at = re.search(r" at (\S+)$", caller)
        calls.append((int(lines[0]), at.group(1).split("/src/")[-1] if at else caller[4:80]))
    return calls


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("binaries", nargs="+")
    parser.add_argument("--list", action="store_true")
    parser.add_argument("--cache", action="store_true")
    args = parser.parse_args()
    if not shutil.which("gdb"):
        sys.exit("gdb is needed: apt-get install -y gdb (bench/tools.sh installs it)")
    tmp = scratch_dir("portico-moves-")
    backend = start_backend(tmp)
    conf = os.path.join(tmp, "portico.yaml")
    write_config(conf, GATEWAY, "cache" if args.cache else "plain")
    try:
        wait_port(BACKEND)
        for binary in args.binaries:
            calls = copies(binary, tmp, conf)
            moves = [c for c in calls if c[0] >= 64]
            print(f"{binary}: {sum(s for s, _ in calls):,} bytes in {len(calls)} memcpy calls a request; "
                  f"{sum(s for s, _ in moves):,} bytes in the {len(moves)} of 64 bytes or more")
            if args.list:
                for size, caller in moves:
                    print(f"  {size:6}  {caller}")
    finally:
        backend.terminate()


if __name__ == "__main__":
    main()
