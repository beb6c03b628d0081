"""A real HTTPS server for the HTTP poller's TLS tests, on Python's ssl (OpenSSL):
serves DIR/stock.json at /stock.json to requests carrying
`Authorization: Bearer feed-token` (401 otherwise), with a certificate from the
test CA. It listens on 127.0.0.1 and 127.0.0.2, so a client can reach it under a
name its certificate does not carry (127.0.0.2).

Usage: https_json_server.py --dir DIR --port PORT
Creates DIR/ca.pem (the CA to trust) and prints READY once it accepts connections.
"""

import argparse
import http.server
import os
import ssl
import sys
import threading

from test_ca import make_certificates


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--dir", required=True)
    p.add_argument("--port", type=int, required=True)
    a = p.parse_args()
    crt, key = make_certificates(a.dir)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.headers.get("Authorization") != "Bearer feed-token":
                self.send_error(401)
                return
            if self.path != "/stock.json":
                self.send_error(404)
                return
            with open(os.path.join(a.dir, "stock.json"), "rb") as f:
                body = f.read()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(crt, key)
    servers = []
    for host in ("127.0.0.1", "127.0.0.2"):
        server = http.server.ThreadingHTTPServer((host, a.port), Handler)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
    print("READY", flush=True)
    sys.stdin.read()  # runs until the test closes our stdin or kills us
    for server in servers:
        server.shutdown()


if __name__ == "__main__":
    main()
