#!/usr/bin/python3
"""tests/tls_client.py -- a TLS client made with Python's ssl module, for tests/test_tls.c.

Usage: tls_client.py PORT VERSION(1.2|1.3) BYTES SEED

Connects to 127.0.0.1:PORT with SNI "tls.test" and ALPN h2, http/1.1, sends BYTES random
bytes in random pieces while reading the echo (one thread, non-blocking), checks that the
echo is what was sent, then closes with close_notify and waits for the server's (unwrap).
Prints one line: "OK <version> <cipher> <alpn> <bytes>", or "FAIL <why>" (exit status 1).
"""
import random
import select
import socket
import ssl
import sys
import time


def run(port, version, total, seed):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    v = ssl.TLSVersion.TLSv1_3 if version == "1.3" else ssl.TLSVersion.TLSv1_2
    ctx.minimum_version = v
    ctx.maximum_version = v
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    rnd = random.Random(seed)
    data = rnd.randbytes(total)
    raw = socket.create_connection(("127.0.0.1", port), timeout=20)
    s = ctx.wrap_socket(raw, server_hostname="tls.test")
    info = (s.version(), s.cipher()[0], s.selected_alpn_protocol() or "-")
    s.setblocking(False)
    sent = 0
    got = bytearray()
    deadline = time.monotonic() + 30
    while len(got) < total:
        if time.monotonic() > deadline:
            return "FAIL timeout: sent %d, got %d" % (sent, len(got))
        select.select([s], [s] if sent < total else [], [], 0.5)
        if sent < total:
            n = rnd.randint(1, 20000)
            try:
                sent += s.send(data[sent:sent + n])
            except (ssl.SSLWantWriteError, ssl.SSLWantReadError):
                pass
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    return "FAIL EOF after %d bytes" % len(got)
                got += chunk
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            pass
    if bytes(got) != data:
        return "FAIL the echo differs"
    s.setblocking(True)
    s.settimeout(20)
    s.unwrap().close()          # our close_notify, then the server's
    return "OK %s %s %s %d" % (info + (len(got),))


def main():
    try:
        line = run(int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    except Exception as e:      # any failure is one line for the test's message
        line = "FAIL %s: %s" % (type(e).__name__, e)
    print(line, flush=True)
    sys.exit(0 if line.startswith("OK") else 1)


if __name__ == "__main__":
    main()
