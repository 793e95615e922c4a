#!/usr/bin/env python3
"""Memory held by idle keep-alive connections: each binary serves one worker
(plain proxying, bench/ab.py's config); 2,000 client connections each make
one request (GET /small, then, on a new set, GET /16k) and stay open, idle,
and the worker's RSS is printed against its RSS before them.

Usage: bench/idle_connections.py [BINARY...] [--connections 2000]
"""
import argparse, os, socket, subprocess, sys, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ab import write_config
from bench import BACKEND, PORTICO, rss_mib, scratch_dir, start_backend, wait_port

GATEWAY = 18190


def answered(sock):
    """Reads one answer framed by Content-Length."""
    got = b""
    while b"\r\n\r\n" not in got:
        got += sock.recv(65536)
    head, _, body = got.partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        body += sock.recv(65536)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("binaries", nargs="*", default=[PORTICO])
    parser.add_argument("--connections", type=int, default=2000)
    args = parser.parse_args()
    tmp = scratch_dir("portico-idle-connections-")
    backend = start_backend(tmp)
    conf = os.path.join(tmp, "portico.yaml")
    write_config(conf, GATEWAY, "plain")
    try:
        wait_port(BACKEND)
        for binary in args.binaries:
            proxy = subprocess.Popen([binary, "run", "--config", conf, "--workers", "1", "--no-watch"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                wait_port(GATEWAY)
                time.sleep(0.5)
                before = rss_mib(proxy.pid)
                for path in ("/small", "/16k"):
                    sockets = []
                    for _ in range(args.connections):
                        sock = socket.create_connection(("127.0.0.1", GATEWAY))
                        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
                        sockets.append(sock)
                    for sock in sockets:
                        answered(sock)
                    time.sleep(0.5)
                    print(f"{binary}: GET {path}, {args.connections:,} idle keep-alive connections: "
                          f"{rss_mib(proxy.pid):.1f} MiB RSS ({before:.1f} MiB before them)", flush=True)
                    for sock in sockets:
                        sock.close()
                    time.sleep(0.5)
            finally:
                proxy.terminate()
                proxy.wait(timeout=30)
    finally:
        backend.terminate()


if __name__ == "__main__":
    main()
