"""A real SMTP server for Restock's tests, built on aiosmtpd: STARTTLS or implicit
TLS with a certificate from a test CA, required AUTH, and chosen recipients refused
with 550 5.1.1. Each accepted message is written to <dir>/msg-<n>.eml with the
envelope in <dir>/msg-<n>.json.

Usage: smtp_tls_server.py --dir DIR --port PORT --tls none|starttls|implicit
       [--auth USER:PASSWORD] [--reject ADDRESS ...]
Creates DIR/ca.pem (the CA to trust) and prints READY once it accepts connections.
"""

import argparse
import asyncio
import json
import os
import ssl
import sys

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from test_ca import make_certificates


class Handler:
    def __init__(self, d, reject, implicit_tls):
        self.dir = d
        # aiosmtpd sets session.ssl only after STARTTLS; on an implicit-TLS port
        # every session is encrypted from the first byte.
        self.implicit_tls = implicit_tls
        self.reject = set(reject)
        self.count = 0

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in self.reject:
            return "550 5.1.1 <%s>: Recipient address rejected: User unknown" % address
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.count += 1
        base = os.path.join(self.dir, "msg-%06d" % self.count)
        with open(base + ".json", "w") as f:
            json.dump({
                "mail_from": envelope.mail_from,
                "rcpt_to": envelope.rcpt_tos,
                "tls": self.implicit_tls or session.ssl is not None,
                "auth": session.authenticated and session.auth_data.login.decode(),
            }, f)
        with open(base + ".eml.tmp", "wb") as f:
            f.write(envelope.original_content)
        os.rename(base + ".eml.tmp", base + ".eml")
        return "250 Message accepted"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--dir", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--tls", choices=["none", "starttls", "implicit"], default="none")
    p.add_argument("--auth")
    p.add_argument("--reject", nargs="*", default=[])
    a = p.parse_args()

    crt, key = make_certificates(a.dir)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(crt, key)

    user, password = (a.auth.split(":", 1) if a.auth else (None, None))

    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = isinstance(auth_data, LoginPassword) and auth_data.login.decode() == user and auth_data.password.decode() == password
        return AuthResult(success=ok, handled=False, auth_data=auth_data)

    kwargs = dict(hostname="127.0.0.1", port=a.port, ready_timeout=10)
    if a.tls == "implicit":
        kwargs["ssl_context"] = context
    elif a.tls == "starttls":
        kwargs["tls_context"] = context
        kwargs["require_starttls"] = True
    if user is not None:
        kwargs.update(authenticator=authenticator, auth_required=True, auth_require_tls=a.tls != "none")
    controller = Controller(Handler(a.dir, a.reject, a.tls == "implicit"), **kwargs)
    controller.start()
    print("READY", flush=True)
    try:
        sys.stdin.read()  # runs until the test closes our stdin or kills us
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
