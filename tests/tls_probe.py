#!/usr/bin/python3
"""tests/tls_probe.py - a TLS client for the daemon's TLS tests (tests/test_tls_gw.c): Python's ssl module (OpenSSL
underneath, but not our code). Run with /usr/bin/python3.

  tls_probe.py PORT [options]
    --version 1.2|1.3     only that version (default: both offered)
    --sni NAME            server name to send (default: none)
    --ca FILE             verify the server's chain (and its name = --sni) against FILE
    --alpn a,b            ALPN protocols to offer
    --cert F --key F      a client certificate
    --bytes N             echo round trip of N checksummed bytes in random pieces (0: none)
    --conns N             N connections one after another; each after the first offers
                          the previous session (ticket resumption); counts resumed ones
    --port2 P             the connections after the first go to port P (another daemon)
    --ws PATH             after the handshake, a WebSocket upgrade to PATH and
                          `cmd:headers`: prints the request headers the backend saw
    --spoof               (with --ws) send X-SSL-Client-DN/-Verify headers of our own
    --hold-port FILE      (with --bytes) keep the first connection open: write "ready"
                          to FILE, wait until FILE says "go", round trip again, then end

Prints one JSON line: {"ok": true, "version", "cipher", "alpn", "cn", "resumed", ...} or
{"ok": false, "error": "..."}. Exit status 0 either way (the test reads the line).
"""
import argparse
import asyncio
import hashlib
import json
import os
import random
import socket
import ssl
import sys
import time


def context(a):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if a.ca:
        ctx.load_verify_locations(a.ca)
        ctx.check_hostname = bool(a.sni)
        ctx.verify_mode = ssl.CERT_REQUIRED
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if a.version == "1.2":
        ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    elif a.version == "1.3":
        ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    if a.alpn:
        ctx.set_alpn_protocols(a.alpn.split(","))
    if a.cert:
        ctx.load_cert_chain(a.cert, a.key)
    return ctx


def peer_cn(s):
    der = s.getpeercert(binary_form=True)
    if not der:
        return ""
    cn = ""
    # No parser for a certificate without verification: the last CN in the DER (the
    # subject's comes after the issuer's).
    i = der.find(b"\x06\x03\x55\x04\x03")  # OID 2.5.4.3
    while i >= 0:
        tag, ln = der[i + 5], der[i + 6]
        if tag in (0x0c, 0x13):
            cn = der[i + 7:i + 7 + ln].decode()
        i = der.find(b"\x06\x03\x55\x04\x03", i + 1)
    return cn


def roundtrip(s, n, seed):
    rnd = random.Random(seed)
    data = bytes(rnd.getrandbits(8) for _ in range(n))
    sent = 0
    got = bytearray()
    s.settimeout(20)
    while sent < n:
        k = min(n - sent, rnd.randint(1, 40000))
        s.sendall(data[sent:sent + k])
        sent += k
        while len(got) < sent - 65536:
            got += s.recv(65536)
    while len(got) < n:
        b = s.recv(65536)
        if not b:
            raise OSError("EOF after %d of %d bytes" % (len(got), n))
        got += b
    if hashlib.sha256(got).digest() != hashlib.sha256(data).digest():
        raise OSError("echo differs")


def one(a, ctx, session, i=0):
    port = a.port2 if a.port2 and i > 0 else a.port
    raw = socket.create_connection(("127.0.0.1", port), timeout=20)
    s = ctx.wrap_socket(raw, server_hostname=a.sni or None, session=session)
    return s


async def ws_headers(a, ctx):
    import websockets
    uri = "wss://%s:%d%s" % (a.sni or "127.0.0.1", a.port, a.ws)
    extra = [("X-SSL-Client-DN", "CN=evil"), ("X-SSL-Client-Verify", "SUCCESS")] \
        if a.spoof else []
    async with websockets.connect(uri, ssl=ctx, server_hostname=a.sni or None,
                                  host="127.0.0.1", port=a.port, compression=None,
                                  open_timeout=20, extra_headers=extra) as ws:
        await ws.send("cmd:headers")
        return json.loads(await asyncio.wait_for(ws.recv(), 20))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("port", type=int)
    p.add_argument("--version")
    p.add_argument("--sni")
    p.add_argument("--ca")
    p.add_argument("--alpn")
    p.add_argument("--cert")
    p.add_argument("--key")
    p.add_argument("--bytes", type=int, default=0)
    p.add_argument("--conns", type=int, default=1)
    p.add_argument("--ws")
    p.add_argument("--hold-port")
    p.add_argument("--spoof", action="store_true")
    p.add_argument("--port2", type=int)
    a = p.parse_args()
    out = {"ok": False}
    try:
        ctx = context(a)
        if a.ws:
            out["headers"] = asyncio.run(ws_headers(a, ctx))
            out["ok"] = True
            print(json.dumps(out))
            return
        session, resumed = None, 0
        for i in range(a.conns):
            s = one(a, ctx, session, i)
            if i == 0:
                out.update(version=s.version(), cipher=s.cipher()[0],
                           alpn=s.selected_alpn_protocol() or "", cn=peer_cn(s))
            if a.bytes:
                roundtrip(s, a.bytes, i)
            if s.session_reused:
                resumed += 1
            if a.hold_port and i == 0:
                with open(a.hold_port, "w") as f:
                    f.write("ready")
                deadline = time.time() + 60
                while time.time() < deadline and open(a.hold_port).read() != "go":
                    time.sleep(0.05)
                roundtrip(s, a.bytes or 1000, 99)
                out["cn_after"] = peer_cn(s)
            session = s.session
            s.close()
        out["resumed"] = resumed
        out["ok"] = True
    except Exception as e:  # noqa: BLE001 - the test reads the reason
        out["error"] = "%s: %s" % (type(e).__name__, e)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
