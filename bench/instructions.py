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

Usage: bench/instructions.py BINARY [BINARY...] [--few 500] [--many 2500] [--top N] [--policies | --cache] [--locked]

--policies counts the route of bench/policies.py instead: key_auth, a rate
limit, a header transform and the access log on. --cache counts hits of the
memory cache (the first request fills it).

--top N also prints, for each binary, the N functions with the most
instructions of their own in the MANY run (callgrind_annotate), per request,
and where that run's callgrind file is (`callgrind_annotate --inclusive=yes
FILE` shows what each function costs with what it calls).

--locked also counts the locked instructions (`lock`-prefixed read-modify-
writes and `xchg` with memory: atomic reference counts, atomic counters,
compare-and-swap) the binary's own code runs a request, and with --top the
functions that run them. Each costs some twenty cycles where the request's
other instructions cost a fraction of one; nginx, one thread a worker,
runs none.
"""
import argparse, collections, os, re, signal, subprocess, sys, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ab import write_config
from bench import BACKEND, scratch_dir, start_backend, wait_port

GATEWAY = 18088


def total_instructions(binary, conf, requests, tmp, top=0, target=("/small", []), locked=None):
    """Instructions the run took in all; with `locked` (the binary's locked
    instructions by address), also the locked ones run, by function."""
    out_file = os.path.join(tmp, f"callgrind.{os.getpid()}.{time.monotonic_ns()}")
    per_instruction = ["--dump-instr=yes"] if locked is not None else []
    proxy = subprocess.Popen(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out_file}", *per_instruction,
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
        annotated = subprocess.run(["callgrind_annotate", "--inclusive=no", "--threshold=100", out_file],
                                   capture_output=True, text=True, check=True).stdout
        rows = re.findall(r"^\s*([\d,]+)\s+\([^)]*\)\s+(?:\*\s+)?(\S.*)$", annotated, re.M)
        for count, name in rows[1:top + 1]:
            print(f"  {int(count.replace(',', '')) / requests:9,.0f}  {name[:150]}")
        print(f"  callgrind file: {out_file}")
    if locked is not None:
        return int(found.group(1)), locked_by_function(out_file, binary, locked)
    return int(found.group(1))


def locked_instructions(binary):
    """The addresses of the binary's locked instructions, from objdump."""
    listing = subprocess.run(["objdump", "-d", "--no-show-raw-insn", binary], capture_output=True, text=True,
                             check=True).stdout
    return {int(address, 16) for address in
            re.findall(r"^\s+([0-9a-f]+):\s+(?:lock |xchg\s+\S+,\S*\()", listing, re.M)}


def locked_by_function(out_file, binary, locked):
    """How many times each function of `binary` ran a locked instruction,
    from a callgrind file written with --dump-instr=yes."""
    names, current, counts, address, after_call = {}, {}, collections.Counter(), 0, False
    for line in open(out_file):
        line = line.rstrip("\n")
        field = re.match(r"^(c?ob|c?fn|c?fi|c?fe|c?fl)=(?:\((\d+)\))? ?(.*)$", line)
        if field:
            key, number, name = field.groups()
            kind = key.lstrip("c")
            if number and name:
                names[(kind, number)] = name
            name = names.get((kind, number), name) if number else name
            if key in ("ob", "fn"):
                current[key] = name
            continue
        if line.startswith("calls="):
            after_call = True  # the next cost line is the call's inclusive cost
            continue
        if not line or line[0] not in "0123456789+-*":
            continue
        position = line.split()[0]
        if position[0] in "+-":
            address += int(position[1:], 0) * (1 if position[0] == "+" else -1)
        elif position != "*":
            address = int(position, 0)
        if after_call:
            after_call = False
            continue
        if os.path.basename(current.get("ob", "")) == os.path.basename(binary) and address in locked:
            counts[current.get("fn", "?")] += int(line.split()[2])
    return counts


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("binaries", nargs="+")
    parser.add_argument("--few", type=int, default=500)
    parser.add_argument("--many", type=int, default=2500)
    parser.add_argument("--top", type=int, default=0)
    parser.add_argument("--locked", action="store_true", help="also count locked (atomic) instructions")
    routes = parser.add_mutually_exclusive_group()
    routes.add_argument("--policies", action="store_true")
    routes.add_argument("--cache", action="store_true")
    args = parser.parse_args()
    tmp = scratch_dir("portico-instructions-")
    backend = start_backend(tmp)
    conf = os.path.join(tmp, "portico.yaml")
    path, headers = write_config(conf, GATEWAY, "policies" if args.policies else "cache" if args.cache else "plain")
    target = (path or "/small", headers)
    wait_port(BACKEND)
    try:
        for binary in args.binaries:
            locked = locked_instructions(binary) if args.locked else None
            few = total_instructions(binary, conf, args.few, tmp, target=target, locked=locked)
            # With --locked, --top lists the functions that run locked instructions.
            many = total_instructions(binary, conf, args.many, tmp, 0 if args.locked else args.top, target, locked)
            requests = args.many - args.few
            if locked is None:
                print(f"{binary}: {(many - few) / requests:,.0f} instructions per request")
                continue
            (few, few_locked), (many, many_locked) = few, many
            per_function = many_locked.copy()
            per_function.subtract(few_locked)
            print(f"{binary}: {(many - few) / requests:,.0f} instructions per request, "
                  f"{sum(per_function.values()) / requests:.1f} of them locked")
            for name, count in per_function.most_common(args.top):
                if count / requests >= 0.5:
                    print(f"  {count / requests:5.1f}  {name[:150]}")
    finally:
        backend.terminate()


if __name__ == "__main__":
    main()
