#!/usr/bin/env python3
"""Portico vs nginx vs HAProxy vs direct-to-backend, on loopback, in one run.

Core 0 runs the proxy under test (one worker); core 1 runs the backend (nginx
serving fixed bodies) and the load generator (wrk). Targets alternate within
every round; figures are medians over rounds.

Primary figure: the proxy's own CPU time per request (user+system from
/proc/PID/stat before and after a run, divided by requests served), because on
two cores the load generator and backend saturate before a fast proxy does.
"""
import argparse, os, re, shutil, signal, statistics, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PORTICO = os.path.join(ROOT, "target", "release", "portico")
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
TICK = os.sysconf("SC_CLK_TCK")
BACKEND, VIA_NGINX, VIA_PORTICO, VIA_HAPROXY = 18080, 18081, 18082, 18083
PROXY_CORE, LOAD_CORE = "0", "1"

NGINX_COMMON = """
worker_processes 1;
worker_rlimit_nofile 8192;
daemon off;
pid {dir}/{name}.pid;
error_log {dir}/{name}.error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log {access_log};
  client_body_temp_path {dir}/{name}-body;
  proxy_temp_path {dir}/{name}-proxy;
  fastcgi_temp_path {dir}/{name}-fcgi;
  uwsgi_temp_path {dir}/{name}-uwsgi;
  scgi_temp_path {dir}/{name}-scgi;
  keepalive_requests 1000000;
{body}
}}
"""

BACKEND_CONF = """
  server {{
    listen 127.0.0.1:{port} reuseport backlog=4096;
    location = /small {{ default_type text/plain; return 200 "hello, world\\n"; }}
    location = /16k {{ default_type application/octet-stream; alias {dir}/16k.bin; }}
    location = /json {{ default_type application/json; return 200 '{{"id":7,"name":"Ada","unread":3}}'; }}
  }}
"""

# The same work Portico does: upstream keep-alive, X-Forwarded-*, a request
# id sent upstream and returned to the client.
PROXY_CONF = """
  upstream backend {{ server 127.0.0.1:{backend}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location / {{
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header X-Forwarded-Host $host;
      proxy_set_header X-Request-Id $request_id;
      add_header X-Request-Id $request_id;
    }}
  }}
"""

# The same work in HAProxy: one thread, idle upstream connections shared,
# X-Forwarded-For, and a request id sent upstream and returned.
HAPROXY_CONF = """
global
  nbthread 1
  maxconn 8192
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  http-reuse always
  {log}
frontend bench
  bind 127.0.0.1:{port}
  unique-id-format %[uuid()]
  http-request set-header X-Request-Id %[unique-id]
  http-request set-header X-Forwarded-Proto http
  http-request set-header X-Forwarded-Host %[req.hdr(host)]
  http-response set-header X-Request-Id %[unique-id]
  option forwardfor
  default_backend backend
backend backend
  server backend 127.0.0.1:{backend}
"""

PORTICO_CONF = """
listeners:
  - {{ name: bench, addr: "127.0.0.1:{port}" }}
upstreams:
  backend: {{ targets: ["127.0.0.1:{backend}"] }}
routes:
  - {{ name: all, match: {{ path: / }}, upstream: backend }}
access_log: {{ enabled: {access_log} }}
"""


def start_nginx(tmp, name, body, core, access_log="off"):
    conf = os.path.join(tmp, f"{name}.conf")
    with open(conf, "w") as f:
        f.write(NGINX_COMMON.format(dir=tmp, name=name, body=body, access_log=access_log))
    master = subprocess.Popen(["taskset", "-c", core, NGINX, "-c", conf, "-p", tmp],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return master


def scratch_dir(prefix):
    """A temporary directory nginx workers can read, with the 16 KiB body the backend serves."""
    tmp = tempfile.mkdtemp(prefix=prefix)
    os.chmod(tmp, 0o755)  # nginx workers run as an unprivileged user when started as root
    with open(os.path.join(tmp, "16k.bin"), "wb") as f:
        f.write(os.urandom(16 * 1024))
    return tmp


def start_portico(tmp, name, config):
    """Portico with `config` (the text of a config file), one worker pinned to
    the proxy core, its access log (stdout) in `tmp/NAME-access.log`."""
    conf = os.path.join(tmp, f"{name}.yaml")
    with open(conf, "w") as f:
        f.write(config)
    log = open(os.path.join(tmp, f"{name}-access.log"), "w")
    return subprocess.Popen(["taskset", "-c", PROXY_CORE, PORTICO, "run", "--config", conf, "--workers", "1",
                             "--no-watch"], stdout=log, stderr=subprocess.DEVNULL)


def start_backend(tmp):
    """The nginx backend serving /small and /16k, on the load core."""
    return start_nginx(tmp, "backend", BACKEND_CONF.format(port=BACKEND, dir=tmp), LOAD_CORE)


def start_haproxy(tmp, core, access_log):
    conf = os.path.join(tmp, "haproxy.cfg")
    # HAProxy logs to syslog only; "on" sends it to a local socket nobody reads.
    log = "log 127.0.0.1:5514 local0\n  option httplog" if access_log else "no log"
    with open(conf, "w") as f:
        f.write(HAPROXY_CONF.format(port=VIA_HAPROXY, backend=BACKEND, log=log))
    return subprocess.Popen(["taskset", "-c", core, HAPROXY, "-db", "-f", conf],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def nginx_worker(master):
    for _ in range(100):
        out = subprocess.run(["pgrep", "-P", str(master.pid)], capture_output=True, text=True).stdout.split()
        if out:
            return int(out[0])
        time.sleep(0.05)
    sys.exit("nginx worker did not start")


def wait_port(port, seconds=10):
    """Waits until something listens on `port` (a large config, or a binary
    under valgrind, takes longer than the default)."""
    import socket
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"nothing listens on {port} after {seconds} s")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # utime and stime are fields 14 and 15; after the ")" they are 12 and 13 (0-based 11, 12).
    return (int(fields[11]) + int(fields[12])) / TICK


def rss_mib(pid):
    """The process's resident memory, in MiB."""
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+) kB", f.read()).group(1)) / 1024


def to_ms(value, unit):
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wrk(url, connections, duration, extra=()):
    out = subprocess.run(
        ["taskset", "-c", LOAD_CORE, "wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", *extra, url],
        capture_output=True, text=True, check=True).stdout
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: (.*)", out)
    if errors:
        sys.exit(f"errors in run against {url}:\n{out}")
    pct = dict((p, to_ms(v, u)) for p, v, u in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", out, re.M))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    return requests, rps, pct["50"], pct["99"]


def wrk_run(url, connections, duration, extra=(), script_args=()):
    """One wrk run with extra options (headers, a Lua script) and arguments
    for the script: requests sent and requests/s. Any error response or
    socket error ends the bench."""
    after = ["--", *script_args] if script_args else []
    out = subprocess.run(["taskset", "-c", LOAD_CORE, "wrk", "-t1", f"-c{connections}", f"-d{duration}s", *extra, url, *after],
                         capture_output=True, text=True, check=True).stdout
    if re.search(r"Non-2xx or 3xx responses|Socket errors", out):
        sys.exit(f"errors in run against {url}:\n{out}")
    return int(re.search(r"(\d+) requests in", out).group(1)), float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))


def h2load(url, connections, duration, streams):
    """One h2load run (HTTP/2, `streams` concurrent streams a connection):
    requests done, requests/s, and no percentiles (h2load gives none)."""
    out = subprocess.run(
        ["taskset", "-c", LOAD_CORE, "h2load", "-t1", f"-c{connections}", f"-m{streams}", f"-D{duration}",
         "--warm-up-time=1", url],
        capture_output=True, text=True, check=True).stdout
    done = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored", out)
    status = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    if not done or int(done.group(3)) or int(done.group(4)) or any(int(n) for n in status.groups()[2:]):
        sys.exit(f"errors in run against {url}:\n{out}")
    rps = float(re.search(r"finished in [\d.]+m?s, ([\d.]+) req/s", out).group(1))
    return int(done.group(2)), rps, None, None


def measure(target, path, connections, duration, scheme="http", extra=(), tool="wrk"):
    """One run against `target` (name, port, pid): wrk with `extra` options,
    or h2load with `extra` concurrent streams when `tool` is "h2load"."""
    name, port, pid = target
    before = cpu_seconds(pid) if pid else 0.0
    url = f"{scheme}://127.0.0.1:{port}{path}"
    if tool == "h2load":
        requests, rps, p50, p99 = h2load(url, connections, duration, extra)
    else:
        requests, rps, p50, p99 = wrk(url, connections, duration, extra)
    used = cpu_seconds(pid) - before if pid else None
    cpu_us = used * 1e6 / requests if pid else None
    # The share of the run the proxy's core was busy with it: near 100%, the
    # proxy was the bottleneck; well under, the load side was.
    busy = used / duration if pid else None
    return {"rps": rps, "p50": p50, "p99": p99, "cpu_us": cpu_us, "busy": busy}


def arg_parser():
    """The options every bench takes: rounds, seconds a run, connections."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=int, default=5, help="seconds per run")
    parser.add_argument("--connections", type=int, default=32)
    return parser


def rounds(cases, args, scheme="http"):
    """Runs every case `(name, port, pid, path[, options[, tool]])` once a
    round, alternating, for `args.rounds` rounds: the measurements by name.
    The tool is wrk unless the case says "h2load". `options` may be a
    function of the round number, for options that change each round."""
    runs = {name: [] for name, *_ in cases}
    for round_ in range(args.rounds):
        for name, port, pid, path, *extra in cases:
            options = extra[0] if extra else ()
            options = options(round_) if callable(options) else options
            tool = extra[1] if len(extra) > 1 else "wrk"
            runs[name].append(measure((name, port, pid), path, args.connections, args.duration, scheme, options, tool))
        print(f"round {round_ + 1}/{args.rounds} done", file=sys.stderr)
    return runs


def stop(gateways, backend):
    """Stops the gateways and waits for them to drain (so the next run's ports are free),
    and the backend."""
    for process in gateways + [backend]:
        process.terminate()
    for process in gateways:
        process.wait(timeout=40)


def print_table(runs, base, args, who):
    """Medians of `runs` as a Markdown table, with ratios to the `base` case."""
    base_rps = median(runs[base], "rps")
    print(f"Medians of {args.rounds} rounds of {args.duration}s, wrk -t1 -c{args.connections}, "
          f"{who} pinned to one core with one worker.\n")
    print(f"| target | req/s | vs {base} | p50 ms | p99 ms | proxy CPU µs/req |")
    print("|---|---:|---:|---:|---:|---:|")
    shown = lambda value, form: "-" if value is None else format(value, form)
    for name, measured in runs.items():
        rps, cpu = median(measured, "rps"), median(measured, "cpu_us")
        print(f"| {name} | {rps:,.0f} | {rps / base_rps:.2f}x | {shown(median(measured, 'p50'), '.2f')} | "
              f"{shown(median(measured, 'p99'), '.2f')} | {shown(cpu, '.1f')} |")


def median(runs, key):
    values = [r[key] for r in runs if r[key] is not None]
    return statistics.median(values) if values else None


def main():
    parser = arg_parser()
    parser.add_argument("--access-log", action="store_true",
                        help="both proxies write an access log to a file (nginx buffered, Portico JSON lines)")
    args = parser.parse_args()
    if not os.path.exists(PORTICO):
        sys.exit("build first: cargo build --release")

    tmp = scratch_dir("portico-bench-")
    procs = []
    try:
        procs.append(start_backend(tmp))
        nginx_log = f"{tmp}/nginx-access.log combined buffer=64k flush=1s" if args.access_log else "off"
        nginx_proxy = start_nginx(tmp, "proxy", PROXY_CONF.format(port=VIA_NGINX, backend=BACKEND), PROXY_CORE,
                                  access_log=nginx_log)
        procs.append(nginx_proxy)
        conf = os.path.join(tmp, "portico.yaml")
        with open(conf, "w") as f:
            f.write(PORTICO_CONF.format(port=VIA_PORTICO, backend=BACKEND,
                                        access_log="true" if args.access_log else "false"))
        portico_log = open(os.path.join(tmp, "portico-access.log"), "w")
        portico = subprocess.Popen(["taskset", "-c", PROXY_CORE, PORTICO, "run", "--config", conf, "--workers", "1"],
                                   stdout=portico_log, stderr=subprocess.DEVNULL)
        procs.append(portico)
        haproxy = start_haproxy(tmp, PROXY_CORE, args.access_log)
        procs.append(haproxy)
        for port in (BACKEND, VIA_NGINX, VIA_PORTICO, VIA_HAPROXY):
            wait_port(port)
        targets = [("direct", BACKEND, None), ("nginx", VIA_NGINX, nginx_worker(nginx_proxy)),
                   ("haproxy", VIA_HAPROXY, haproxy.pid), ("portico", VIA_PORTICO, portico.pid)]

        loads = [("small", "/small", args.connections), ("16 KiB", "/16k", args.connections), ("small, 1 conn", "/small", 1)]
        for target in targets:  # warm up connections and caches
            for _, path, conns in loads:
                measure(target, path, conns, 1)
        results = {}
        for round_no in range(args.rounds):
            order = targets[round_no % len(targets):] + targets[:round_no % len(targets)]
            for label, path, conns in loads:
                for target in order:
                    results.setdefault((label, target[0]), []).append(measure(target, path, conns, args.duration))
            print(f"round {round_no + 1}/{args.rounds} done", file=sys.stderr)

        logs = "access logs on (to files)" if args.access_log else "access logs off"
        print(f"Medians of {args.rounds} rounds of {args.duration}s, wrk -t1 -c{args.connections} "
              f"(the `1 conn` rows: -c1, latency at low load), {logs}. "
              f"CPU/req: the proxy's user+system time per request.\n")
        print("| load | target | req/s | p50 ms | p99 ms | CPU µs/req | CPU vs nginx | added p50 vs direct | proxy busy |")
        print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
        for label, _, _ in loads:
            direct = median(results[(label, "direct")], "p50")
            nginx_cpu = median(results[(label, "nginx")], "cpu_us")
            for name, _, _ in targets:
                runs = results[(label, name)]
                cpu = median(runs, "cpu_us")
                p50 = median(runs, "p50")
                ratio = f"{cpu / nginx_cpu:.2f}x" if cpu and nginx_cpu else "-"
                added = f"{(p50 - direct) * 1000:+.0f} µs" if name != "direct" else "-"
                busy = median(runs, "busy")
                print(f"| {label} | {name} | {median(runs, 'rps'):,.0f} | {p50:.3f} | {median(runs, 'p99'):.3f} | "
                      f"{cpu:.1f} | {ratio} | {added} | {busy:.0%} |" if cpu else
                      f"| {label} | {name} | {median(runs, 'rps'):,.0f} | {p50:.3f} | {median(runs, 'p99'):.3f} | - | - | - | - |")
        print("\nproxy busy: the share of each run the proxy's core spent on it. Near 100%, the proxy was "
              "saturated and requests/s rank the proxies; well under, the load side (wrk and the backend on "
              "the other core) was, and CPU µs/req is the figure that ranks them.")
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
