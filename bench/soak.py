#!/usr/bin/env python3
"""Failover soak: 3 targets under steady load while one is killed and restarted.

Every `--kill-every` seconds one backend (nginx, single process) is killed with
SIGKILL, rotating through the three, and restarted `--down-for` seconds later.
wrk drives GETs through Portico the whole time. Reports requests sent, errors
seen by the client (non-2xx and socket errors), and latency percentiles.

Usage: bench/soak.sh [--duration 180] [--kill-every 10] [--down-for 3]
"""
import argparse, os, re, shutil, signal, subprocess, tempfile, threading, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PORTICO = os.path.join(ROOT, "target", "release", "portico")
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
BACKENDS = [18091, 18092, 18093]
GATEWAY = 18090

BACKEND_CONF = """
master_process off;
daemon off;
pid {dir}/b{port}.pid;
error_log {dir}/b{port}.err warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {dir}/b{port}-body;
  proxy_temp_path {dir}/b{port}-proxy;
  fastcgi_temp_path {dir}/b{port}-fcgi;
  uwsgi_temp_path {dir}/b{port}-uwsgi;
  scgi_temp_path {dir}/b{port}-scgi;
  server {{
    listen 127.0.0.1:{port} reuseport;
    location / {{ default_type text/plain; return 200 "ok {port}\\n"; }}
  }}
}}
"""

PORTICO_CONF = """
listeners: [{{ name: soak, addr: "127.0.0.1:{gateway}" }}]
upstreams:
  svc:
    targets: [{targets}]
    timeouts: {{ connect: 500ms, response: 5s }}
    health_check:
      active: {{ path: /health, interval: 1s, timeout: 500ms, healthy: 1, unhealthy: 1 }}
      passive: {{ consecutive_failures: 1, eject_for: 2s, max_eject_for: 10s }}
    retries: {{ attempts: 2, backoff: 5ms, budget: 20% }}
routes: [{{ name: svc, match: {{ path: / }}, upstream: svc }}]
access_log: {{ enabled: {access_log} }}
"""


def start_backend(tmp, port):
    conf = os.path.join(tmp, f"b{port}.conf")
    with open(conf, "w") as f:
        f.write(BACKEND_CONF.format(dir=tmp, port=port))
    return subprocess.Popen([NGINX, "-c", conf, "-p", tmp], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=int, default=180)
    parser.add_argument("--kill-every", type=float, default=10)
    parser.add_argument("--down-for", type=float, default=3)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--errors-log", help="write Portico's access-log lines of failed requests here")
    args = parser.parse_args()
    tmp = tempfile.mkdtemp(prefix="portico-soak-")
    os.chmod(tmp, 0o755)
    backends = {port: start_backend(tmp, port) for port in BACKENDS}
    conf = os.path.join(tmp, "portico.yaml")
    with open(conf, "w") as f:
        f.write(PORTICO_CONF.format(gateway=GATEWAY, targets=", ".join(f'"127.0.0.1:{p}"' for p in BACKENDS),
                                    access_log="true" if args.errors_log else "false"))
    log = open(os.path.join(tmp, "portico.log"), "w")
    access = open(os.path.join(tmp, "access.log"), "w")
    portico = subprocess.Popen([PORTICO, "run", "--config", conf], stdout=access, stderr=log)
    time.sleep(1.5)
    kills = []
    stop = threading.Event()

    def killer():
        i = 0
        while not stop.wait(args.kill_every):
            port = BACKENDS[i % len(BACKENDS)]
            backends[port].send_signal(signal.SIGKILL)
            backends[port].wait()
            kills.append(port)
            if stop.wait(args.down_for):
                break
            backends[port] = start_backend(tmp, port)
            i += 1

    thread = threading.Thread(target=killer)
    thread.start()
    try:
        out = subprocess.run(["wrk", "-t1", f"-c{args.connections}", f"-d{args.duration}s", "--latency",
                              f"http://127.0.0.1:{GATEWAY}/"], capture_output=True, text=True).stdout
    finally:
        stop.set()
        thread.join()
        portico.send_signal(signal.SIGTERM)
        portico.wait(timeout=40)
        for proc in backends.values():
            proc.kill()
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sockets = re.search(r"Socket errors: (.*)", out)
    pct = dict(re.findall(r"^\s+(\d+)%\s+(\S+)\s*$", out, re.M))
    print(f"Soak: {args.duration}s, wrk -t1 -c{args.connections} GET through Portico to 3 nginx targets; "
          f"one target killed (SIGKILL) every {args.kill_every:g}s and restarted {args.down_for:g}s later "
          f"({len(kills)} kills).\n")
    print("| requests | non-2xx | socket errors | p50 | p90 | p99 |")
    print("|---:|---:|---:|---:|---:|---:|")
    print(f"| {requests:,} | {non2xx.group(1) if non2xx else 0} | {sockets.group(1) if sockets else 'none'} | "
          f"{pct.get('50')} | {pct.get('90')} | {pct.get('99')} |")
    if args.errors_log:
        access.close()
        with open(os.path.join(tmp, "access.log")) as lines, open(args.errors_log, "w") as out:
            out.writelines(line for line in lines if '"status":200' not in line)
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
