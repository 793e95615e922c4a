#!/usr/bin/env python3
"""Reload and upgrade soaks: steady keep-alive load while the gateway changes.

--mode reload (default): a baseline run with no reloads, then a run of the same
length during which the config is reloaded `--reloads` times, cycling through
two valid configs and one invalid one, alternately by SIGHUP and by the admin
API's POST /reload. The two valid configs differ in a route and in the
upstream's timeouts, so every valid reload replaces the upstream pool.

--mode upgrade: one run during which the binary is replaced `--upgrades`
times by SIGUSR2 (each new process takes the listening sockets, then retires
the old one).

wrk drives GETs through Portico to an nginx backend. Reports requests sent,
failures seen by the client (non-2xx and socket errors), and latency
percentiles; for reloads, the p99 with and without reloads.

Usage: bench/ops_soak.sh [--mode reload|upgrade] [--duration 60] [--reloads 100] [--upgrades 10]
"""
import argparse, json, os, re, shutil, signal, subprocess, tempfile, threading, time, urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PORTICO = os.path.join(ROOT, "target", "release", "portico")
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
BACKEND, GATEWAY, ADMIN = 18091, 18090, 18099
TOKEN = "soak-admin-token-0123456789abcdef"

BACKEND_CONF = """
master_process off;
daemon off;
pid {dir}/backend.pid;
error_log {dir}/backend.err warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {dir}/body;
  proxy_temp_path {dir}/proxy;
  fastcgi_temp_path {dir}/fcgi;
  uwsgi_temp_path {dir}/uwsgi;
  scgi_temp_path {dir}/scgi;
  server {{
    listen 127.0.0.1:{port};
    location / {{ default_type text/plain; return 200 "ok\\n"; }}
  }}
}}
"""

CONFIG = """
listeners: [{{ name: soak, addr: "127.0.0.1:{gateway}" }}]
admin: {{ addr: "127.0.0.1:{admin}", token: "{token}" }}
access_log: {{ enabled: false }}
upstreams:
  svc:
    targets: ["127.0.0.1:{backend}"]
    timeouts: {{ connect: 500ms, response: {response} }}
routes:
  - {{ name: svc, match: {{ path: / }}, upstream: svc }}
  - {{ name: extra-{variant}, match: {{ path: /extra }}, respond: {{ body: {variant} }} }}
"""
INVALID = "listeners: [{ name: soak, addr: 127.0.0.1:1 }]\nroutes: [{ name: broken, upstream: nowhere }]\n"


def config(variant):
    return CONFIG.format(gateway=GATEWAY, admin=ADMIN, token=TOKEN, backend=BACKEND,
                         response="5s" if variant == "a" else "6s", variant=variant)


def admin(path, method="GET"):
    request = urllib.request.Request(f"http://127.0.0.1:{ADMIN}{path}", method=method,
                                     headers={"Authorization": f"Bearer {TOKEN}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def wrk(duration, connections):
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency",
                          f"http://127.0.0.1:{GATEWAY}/"], capture_output=True, text=True).stdout
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sockets = re.search(r"Socket errors: (.*)", out)
    pct = dict(re.findall(r"^\s+(\d+)%\s+(\S+)\s*$", out, re.M))
    return {"requests": requests, "non2xx": int(non2xx.group(1)) if non2xx else 0,
            "sockets": sockets.group(1) if sockets else "none", "p50": pct.get("50"), "p99": pct.get("99")}


def row(name, result):
    return (f"| {name} | {result['requests']:,} | {result['non2xx']} | {result['sockets']} | "
            f"{result['p50']} | {result['p99']} |")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=["reload", "upgrade"], default="reload")
    parser.add_argument("--duration", type=int, default=60)
    parser.add_argument("--reloads", type=int, default=100)
    parser.add_argument("--upgrades", type=int, default=10)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    tmp = tempfile.mkdtemp(prefix="portico-ops-soak-")
    os.chmod(tmp, 0o755)
    with open(os.path.join(tmp, "backend.conf"), "w") as f:
        f.write(BACKEND_CONF.format(dir=tmp, port=BACKEND))
    backend = subprocess.Popen([NGINX, "-c", os.path.join(tmp, "backend.conf"), "-p", tmp],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    conf = os.path.join(tmp, "portico.yaml")
    with open(conf, "w") as f:
        f.write(config("a"))
    log = open(os.path.join(tmp, "portico.log"), "w")
    portico = subprocess.Popen([PORTICO, "run", "--config", conf, "--no-watch"],
                               stdout=subprocess.DEVNULL, stderr=log)
    time.sleep(1.5)
    stop = threading.Event()
    events = []
    try:
        if args.mode == "reload":
            baseline = wrk(args.duration, args.connections)

            def reloader():
                cycle = [config("b"), INVALID, config("a")]
                gap = args.duration / (args.reloads + 1)
                for i in range(args.reloads):
                    if stop.wait(gap):
                        return
                    with open(conf + ".new", "w") as f:
                        f.write(cycle[i % 3])
                    os.rename(conf + ".new", conf)
                    if i % 2 == 0:
                        portico.send_signal(signal.SIGHUP)
                        events.append("signal")
                    else:
                        status, _ = admin("/reload", "POST")
                        events.append(status)

            thread = threading.Thread(target=reloader)
            thread.start()
            during = wrk(args.duration, args.connections)
            stop.set()
            thread.join()
            time.sleep(1)
            _, metrics = admin("/metrics")
            ok = re.search(r'portico_config_reloads_total\{result="success"\} (\d+)', metrics)
            bad = re.search(r'portico_config_reloads_total\{result="failure"\} (\d+)', metrics)
            print(f"Reload soak: wrk -t1 -c{args.connections}, {args.duration}s without reloads, then "
                  f"{args.duration}s with {len(events)} reloads (every {args.duration / (args.reloads + 1):.2f}s, "
                  f"cycling valid B, invalid, valid A; SIGHUP and POST /reload alternately).\n")
            print(f"Reloads applied: {ok.group(1) if ok else 0}, refused: {bad.group(1) if bad else 0}.\n")
            print("| run | requests | non-2xx | socket errors | p50 | p99 |")
            print("|---|---:|---:|---:|---:|---:|")
            print(row("no reloads", baseline))
            print(row(f"{len(events)} reloads", during))
        else:
            pids = []

            def upgrader():
                gap = args.duration / (args.upgrades + 1)
                for _ in range(args.upgrades):
                    if stop.wait(gap):
                        return
                    _, status = admin("/status")
                    pid = json.loads(status)["pid"]
                    os.kill(pid, signal.SIGUSR2)
                    deadline = time.time() + 10
                    while time.time() < deadline:
                        time.sleep(0.05)
                        try:
                            _, status = admin("/status")
                            new = json.loads(status)["pid"]
                        except Exception:
                            continue
                        if new != pid:
                            pids.append(new)
                            break

            thread = threading.Thread(target=upgrader)
            thread.start()
            during = wrk(args.duration, args.connections)
            stop.set()
            thread.join()
            print(f"Upgrade soak: wrk -t1 -c{args.connections} for {args.duration}s (keep-alive), "
                  f"{len(pids)} binary upgrades by SIGUSR2 (every {args.duration / (args.upgrades + 1):.1f}s).\n")
            print("| run | requests | non-2xx | socket errors | p50 | p99 |")
            print("|---|---:|---:|---:|---:|---:|")
            print(row(f"{len(pids)} upgrades", during))
    finally:
        stop.set()
        try:
            _, status = admin("/status")
            os.kill(json.loads(status)["pid"], signal.SIGTERM)
        except Exception:
            pass
        portico.send_signal(signal.SIGTERM)
        try:
            portico.wait(timeout=40)
        except subprocess.TimeoutExpired:
            portico.kill()
        time.sleep(1)
        backend.kill()
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
