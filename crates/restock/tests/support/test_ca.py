"""The test CA shared by the TLS test servers (SMTP, HTTPS): a CA certificate and
a leaf for 127.0.0.1 and localhost signed by it, made with the openssl command."""

import os
import subprocess


def make_certificates(d):
    """A CA and a leaf for 127.0.0.1 signed by it (rustls refuses a bare self-signed leaf)."""
    def run(*args):
        subprocess.run(args, check=True, capture_output=True)
    ca_key, ca, key, csr, crt, ext = (os.path.join(d, n) for n in ("ca.key", "ca.pem", "leaf.key", "leaf.csr", "leaf.pem", "leaf.ext"))
    run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out", ca,
        "-days", "2", "-subj", "/CN=Restock Test CA",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1")
    with open(ext, "w") as f:
        f.write("basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n"
                "extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run("openssl", "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
        "-out", crt, "-days", "2", "-extfile", ext)
    return crt, key
