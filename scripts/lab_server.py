#!/usr/bin/env python3
"""A lab backend: an HTTP server and a UDP responder that say who they are and log who asked.

    lab_server.py --name be1 --http 80 --udp 53 --log DIR/be1.access

HTTP: `GET /` answers "<name>\\n"; `GET /blob` answers BLOB_SIZE bytes of a fixed pseudo-random
stream (so a download can be checked byte for byte); `PUT` (an upload) answers the SHA-256 of
the body in hex; anything else is 404. HTTP/1.0, one request
per connection, so every request is a new flow. UDP: a datagram is answered with
"<name>:<datagram>" (padded with dots to N bytes if the datagram starts with "pad:N:"). Each request, either kind, is one line in the log:
"<name> <proto> <client-ip> <client-port> <path or bytes>", flushed at once. Echo (`--echo
PORT`): every byte of a TCP connection is sent back, until the client closes (long-lived
streams for the session-sync test); logged as "<name> echo <ip> <port> <bytes>" at the end.
With `--ipv6`, each server listens on IPv6 (`::`) as well as on IPv4.
"""
import argparse
import hashlib
import http.server
import socket
import socketserver
import sys
import threading

BLOB_SIZE = 10 * 1024 * 1024


def blob():
    """BLOB_SIZE bytes: SHA-256 in counter mode over a fixed seed (the tests rebuild it)."""
    out = bytearray()
    i = 0
    while len(out) < BLOB_SIZE:
        out += hashlib.sha256(b"sluice-lab-blob-%d" % i).digest()
        i += 1
    return bytes(out[:BLOB_SIZE])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--name", required=True)
    ap.add_argument("--http", type=int)
    ap.add_argument("--udp", type=int)
    ap.add_argument("--ipv6", action="store_true", help="listen on IPv6 as well")
    ap.add_argument("--echo", type=int)
    ap.add_argument("--log", required=True)
    args = ap.parse_args()
    log = open(args.log, "a", buffering=1)
    lock = threading.Lock()

    def record(line):
        with lock:
            log.write(f"{args.name} {line}\n")

    data = blob()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def do_HEAD(self):
            # Health checks: headers only, not logged as requests.
            self.send_response(200 if self.path in ("/", "/blob") else 404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_GET(self):
            if self.path == "/":
                body = (args.name + "\n").encode()
            elif self.path == "/blob":
                body = data
            else:
                self.send_error(404)
                return
            record(f"tcp {self.client_address[0]} {self.client_address[1]} {self.path}")
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_PUT(self):
            # An upload: answered with the SHA-256 of what came (hex), so the client can check it.
            n = int(self.headers.get("Content-Length", "0"))
            h, left = hashlib.sha256(), n
            while left > 0:
                chunk = self.rfile.read(min(left, 65536))
                if not chunk:
                    break
                h.update(chunk)
                left -= len(chunk)
            record(f"tcp {self.client_address[0]} {self.client_address[1]} PUT {self.path} {n - left}")
            body = (h.hexdigest() + "\n").encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, fmt, *a):
            pass

    class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
        daemon_threads = True
        request_queue_size = 512
        allow_reuse_address = True

    class Server6(Server):
        address_family = socket.AF_INET6

        def server_bind(self):
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            super().server_bind()

    families = [(socket.AF_INET, "0.0.0.0", Server)] + ([(socket.AF_INET6, "::", Server6)] if args.ipv6 else [])
    threads = []
    for _, any_addr, server in families if args.http else []:
        httpd = server((any_addr, args.http), Handler)
        threads.append(threading.Thread(target=httpd.serve_forever, daemon=True))
    for family, any_addr, _ in families if args.udp else []:
        sock = socket.socket(family, socket.SOCK_DGRAM)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((any_addr, args.udp))

        def udp_loop(sock=sock):
            while True:
                msg, peer = sock.recvfrom(65535)
                record(f"udp {peer[0]} {peer[1]} {len(msg)}")
                answer = args.name.encode() + b":" + msg
                if msg.startswith(b"pad:"):
                    # "pad:N:...": the answer padded to N bytes (big answers from small questions).
                    want = int(msg.split(b":")[1] or 0)
                    answer += b"." * max(0, min(want, 65000) - len(answer))
                sock.sendto(answer, peer)

        threads.append(threading.Thread(target=udp_loop, daemon=True))
    if args.echo:
        class Echo(socketserver.BaseRequestHandler):
            def handle(self):
                n = 0
                while True:
                    b = self.request.recv(65536)
                    if not b:
                        break
                    self.request.sendall(b)
                    n += len(b)
                record(f"echo {self.client_address[0]} {self.client_address[1]} {n}")

        class EchoServer(socketserver.ThreadingMixIn, socketserver.TCPServer):
            daemon_threads = True
            allow_reuse_address = True

        class EchoServer6(EchoServer):
            address_family = socket.AF_INET6

            def server_bind(self):
                self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                super().server_bind()

        for _, any_addr, _ in families:
            echo = (EchoServer6 if ":" in any_addr else EchoServer)((any_addr, args.echo), Echo)
            threads.append(threading.Thread(target=echo.serve_forever, daemon=True))
    for t in threads:
        t.start()
    print(f"{args.name} serving: http {args.http} udp {args.udp} echo {args.echo}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    sys.exit(0)


if __name__ == "__main__":
    main()
