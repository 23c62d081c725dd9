#!/usr/bin/python3
"""tests/ws_peer.py - an independent WebSocket peer for corogate's integration tests.

Uses Debian's python3-websockets (10.x, legacy asyncio API). Run with /usr/bin/python3.

  ws_peer.py backend [--subprotocols a,b] [--deflate] [--log FILE] [--refuse PATH=STATUS,...]
      An echo backend on 127.0.0.1 (port chosen by the kernel); prints "READY <port>" once
      listening. With --refuse, an upgrade to PATH is answered with STATUS instead (a
      working server that refuses a request, e.g. /denied=403, or fails it, /broken=500). Every message is echoed with its type, except text commands:
        cmd:headers            answers a JSON object: the request's path and headers
        cmd:subprotocol        answers the negotiated subprotocol ("" when none)
        cmd:extensions         answers the negotiated extensions' names ("" when none;
                               --deflate accepts permessage-deflate)
        cmd:close CODE REASON  closes with CODE and REASON
        cmd:flood N SIZE       sends N binary messages of SIZE bytes
        cmd:ping               pings the client side; answers "pong" once the pong came
        cmd:abort              drops the TCP connection without a close frame
        cmd:report TEXT        logs "report TEXT" (a browser page's results); answers "reported"
      With --log, appends one line per event: "open PATH", "negotiated SUBPROTOCOL
      EXTENSIONS" ("-" for none), "compressed OPCODE LEN" (a message that came compressed:
      its first frame had RSV1; --deflate only), "close CODE REASON".

  ws_peer.py client URL SCENARIO [ARGS...]
      Runs one scenario against URL; prints what went wrong and exits 1, or exits 0.
"""
import asyncio
import http
import json
import os
import sys

import websockets
from websockets.exceptions import ConnectionClosed

OPTS = dict(max_size=None, ping_interval=None, compression=None, close_timeout=5)


def log_event(path, line):
    if path:
        with open(path, "a") as f:
            f.write(line + "\n")


def log_compressed(logfile):
    """Wraps permessage-deflate's decoder so that each message that arrives compressed is
    logged: a test then knows the frames were compressed end to end, not only that the
    extension was negotiated."""
    from websockets.extensions import permessage_deflate as pmd
    decode = pmd.PerMessageDeflate.decode

    def logged(self, frame, *, max_size=None):
        if frame.rsv1:
            log_event(logfile, "compressed %s %d" % (frame.opcode.name, len(frame.data)))
        return decode(self, frame, max_size=max_size)
    pmd.PerMessageDeflate.decode = logged


async def backend_main(args):
    subprotocols = None
    logfile = None
    refuse = {}
    opts = dict(OPTS)
    i = 0
    while i < len(args):
        if args[i] == "--deflate":
            opts["compression"] = "deflate"
            i += 1
        elif args[i] == "--subprotocols":
            subprotocols = args[i + 1].split(",")
            i += 2
        elif args[i] == "--log":
            logfile = args[i + 1]
            i += 2
        elif args[i] == "--refuse":
            for item in args[i + 1].split(","):
                where, status = item.split("=")
                refuse[where] = int(status)
            i += 2
        else:
            raise SystemExit("backend: unknown option " + args[i])
    if opts["compression"] and logfile:
        log_compressed(logfile)

    async def handler(ws, path):
        log_event(logfile, "open " + path)
        log_event(logfile, "negotiated %s %s" % (
            ws.subprotocol or "-", ",".join(e.name for e in ws.extensions) or "-"))
        try:
            async for msg in ws:
                if isinstance(msg, str) and msg.startswith("cmd:"):
                    words = msg[4:].split(" ", 2)
                    cmd = words[0]
                    if cmd == "headers":
                        hdrs = {k.lower(): v for k, v in ws.request_headers.raw_items()}
                        await ws.send(json.dumps({"path": path, "headers": hdrs}))
                    elif cmd == "subprotocol":
                        await ws.send(ws.subprotocol or "")
                    elif cmd == "extensions":
                        await ws.send(",".join(e.name for e in ws.extensions))
                    elif cmd == "close":
                        await ws.close(int(words[1]), words[2] if len(words) > 2 else "")
                    elif cmd == "flood":
                        n, size = int(words[1]), int(words[2])
                        blob = bytes(size)
                        for _ in range(n):
                            await ws.send(blob)
                    elif cmd == "report":
                        log_event(logfile, "report " + msg[len("cmd:report "):])
                        await ws.send("reported")
                    elif cmd == "abort":
                        ws.transport.abort()
                        break
                    elif cmd == "ping":
                        waiter = await ws.ping(b"backend")
                        await asyncio.wait_for(waiter, 5)
                        await ws.send("pong")
                    else:
                        await ws.send("unknown command")
                else:
                    await ws.send(msg)
        except ConnectionClosed:
            pass
        log_event(logfile, "close %s %s" % (ws.close_code, ws.close_reason))

    async def process_request(path, headers):
        status = refuse.get(path)
        if status:
            log_event(logfile, "refused %s %d" % (path, status))
            return http.HTTPStatus(status), [("Content-Type", "text/plain")], b"refused\n"
        return None

    async with websockets.serve(handler, "127.0.0.1", 0, subprotocols=subprotocols,
                                process_request=process_request, **opts) as server:
        port = server.sockets[0].getsockname()[1]
        print("READY %d" % port, flush=True)
        await asyncio.Future()


class Fail(Exception):
    pass


def check(cond, what):
    if not cond:
        raise Fail(what)


async def expect_close(ws, code, reason=None, timeout=10):
    """Waits for the connection to close and checks the code (and reason) received."""
    try:
        while True:
            await asyncio.wait_for(ws.recv(), timeout)
    except ConnectionClosed:
        pass
    check(ws.close_code == code, "close code %s, expected %s (reason %r)"
          % (ws.close_code, code, ws.close_reason))
    if reason is not None:
        check(ws.close_reason == reason, "close reason %r, expected %r"
              % (ws.close_reason, reason))


async def sc_echo(url, args):
    async with websockets.connect(url, **OPTS) as ws:
        for msg in ["hello", "", "héllo wörld ✓ 𝄞", b"\x00\x01\x02binary", b""]:
            await ws.send(msg)
            got = await asyncio.wait_for(ws.recv(), 5)
            check(got == msg and type(got) == type(msg), "echo of %r gave %r" % (msg, got))
        # fragmented: one message sent as several frames
        await ws.send(["frag", "men", "ted ✓"])
        got = await asyncio.wait_for(ws.recv(), 5)
        check(got == "fragmented ✓", "fragmented text gave %r" % got)
        await ws.send([b"\x01" * 1000, b"\x02" * 70000, b"\x03"])
        got = await asyncio.wait_for(ws.recv(), 5)
        check(got == b"\x01" * 1000 + b"\x02" * 70000 + b"\x03", "fragmented binary")
        big = os.urandom(1 << 20)           # exactly max_message_size
        await ws.send(big)
        got = await asyncio.wait_for(ws.recv(), 10)
        check(got == big, "1 MiB binary came back different (%d bytes)" % len(got))
        text = ("0123456789abcdé" * 70000)[: (1 << 20) // 2]
        await ws.send(text)
        got = await asyncio.wait_for(ws.recv(), 10)
        check(got == text, "large text came back different")
        # many small messages in flight at once
        for i in range(200):
            await ws.send("m%d" % i)
        for i in range(200):
            got = await asyncio.wait_for(ws.recv(), 5)
            check(got == "m%d" % i, "message %d came back as %r" % (i, got))
        await ws.close(1000, "done")
        check(ws.close_code == 1000, "close code %s" % ws.close_code)


async def sc_subprotocol(url, args):
    offer = args[0].split(",")
    want = args[1] if len(args) > 1 else None
    async with websockets.connect(url, subprotocols=offer, **OPTS) as ws:
        check(ws.subprotocol == want, "negotiated %r, expected %r" % (ws.subprotocol, want))
        await ws.send("cmd:subprotocol")
        got = await asyncio.wait_for(ws.recv(), 5)
        check(got == (want or ""), "backend negotiated %r" % got)


async def sc_headers(url, args):
    extra = {"X-Request-Id": "trace-42", "Origin": "http://example.com",
             "User-Agent": "ws-peer-test", "X-Forwarded-For": "192.0.2.7"}
    async with websockets.connect(url, extra_headers=extra, **OPTS) as ws:
        check(ws.response_headers.get("X-Request-Id") == "trace-42",
              "101 X-Request-Id: %r" % ws.response_headers.get("X-Request-Id"))
        await ws.send("cmd:headers")
        info = json.loads(await asyncio.wait_for(ws.recv(), 5))
    h = info["headers"]
    check(info["path"] == "/chat/room?x=1", "path %r" % info["path"])
    # not from a trusted proxy: the client's own X-Forwarded-For is replaced, not appended to
    check(h.get("x-forwarded-for") == "127.0.0.1", "XFF %r" % h.get("x-forwarded-for"))
    check(h.get("x-forwarded-proto") == "http", "XFP %r" % h.get("x-forwarded-proto"))
    check("for=127.0.0.1" in h.get("forwarded", ""), "Forwarded %r" % h.get("forwarded"))
    check(h.get("x-request-id") == "trace-42", "X-Request-Id %r" % h.get("x-request-id"))
    check(h.get("origin") == "http://example.com", "Origin %r" % h.get("origin"))
    check(h.get("user-agent") == "ws-peer-test", "User-Agent %r" % h.get("user-agent"))
    check("sec-websocket-extensions" not in h, "extensions were offered")
    # without one, an id is made up
    async with websockets.connect(url, **OPTS) as ws:
        rid = ws.response_headers.get("X-Request-Id") or ""
        await ws.send("cmd:headers")
        info = json.loads(await asyncio.wait_for(ws.recv(), 5))
        check(len(rid) == 32 and info["headers"].get("x-request-id") == rid,
              "generated X-Request-Id %r / %r" % (rid, info["headers"].get("x-request-id")))


async def sc_too_big(url, args):
    async with websockets.connect(url, **OPTS) as ws:
        await ws.send("small")
        await asyncio.wait_for(ws.recv(), 5)
        try:
            await ws.send(b"x" * int(args[0]))
        except ConnectionClosed:
            pass
        await expect_close(ws, 1009)


async def sc_rate_close(url, args):
    async with websockets.connect(url, **OPTS) as ws:
        try:
            for i in range(int(args[0])):
                await ws.send("burst %d" % i)
        except ConnectionClosed:
            pass
        await expect_close(ws, 1008)


async def sc_rate_delay(url, args):
    """N messages at a limited rate all arrive, and take at least MIN_MS."""
    n, min_ms = int(args[0]), int(args[1])
    loop = asyncio.get_running_loop()
    async with websockets.connect(url, **OPTS) as ws:
        t0 = loop.time()
        for i in range(n):
            await ws.send("m%d" % i)
        for i in range(n):
            got = await asyncio.wait_for(ws.recv(), 10)
            check(got == "m%d" % i, "message %d came back as %r" % (i, got))
        el = (loop.time() - t0) * 1000
        check(el >= min_ms, "%d messages took %d ms, expected at least %d" % (n, el, min_ms))


async def sc_ping(url, args):
    async with websockets.connect(url, **OPTS) as ws:
        for i in range(3):
            waiter = await ws.ping(b"p%d" % i)
            await asyncio.wait_for(waiter, 2)
        # the backend's pings are answered by the gateway too
        await ws.send("cmd:ping")
        got = await asyncio.wait_for(ws.recv(), 5)
        check(got == "pong", "backend ping: %r" % got)


async def sc_keepalive(url, args):
    """A client that answers pings (websockets does) stays; idle for longer than the
    keepalive interval it still is open."""
    async with websockets.connect(url, **OPTS) as ws:
        await asyncio.sleep(float(args[0]))
        await ws.send("still here")
        got = await asyncio.wait_for(ws.recv(), 5)
        check(got == "still here", "after idle: %r" % got)


async def sc_close_client(url, args):
    code, reason = int(args[0]), args[1]
    async with websockets.connect(url, **OPTS) as ws:
        await ws.send("x")
        await asyncio.wait_for(ws.recv(), 5)
        await ws.close(code, reason)
        check(ws.close_code == code, "answer to our close: %s %r" % (ws.close_code,
                                                                     ws.close_reason))


async def sc_close_backend(url, args):
    code, reason = int(args[0]), args[1]
    async with websockets.connect(url, **OPTS) as ws:
        await ws.send("cmd:close %d %s" % (code, reason))
        await expect_close(ws, code, reason)


async def sc_backend_abort(url, args):
    async with websockets.connect(url, **OPTS) as ws:
        await ws.send("cmd:abort")
        await expect_close(ws, 1014, "upstream went away")


async def sc_idle(url, args):
    async with websockets.connect(url, **OPTS) as ws:
        await expect_close(ws, 1001, "idle timeout", timeout=float(args[0]))


async def sc_bridge(url, args):
    """upstream_protocol = tcp against a TCP echo server."""
    async with websockets.connect(url, **OPTS) as ws:
        for payload in [b"hello tcp", os.urandom(300000), "text goes as bytes ✓"]:
            want = payload.encode() if isinstance(payload, str) else payload
            await ws.send(payload)
            got = b""
            while len(got) < len(want):
                msg = await asyncio.wait_for(ws.recv(), 5)
                check(isinstance(msg, bytes), "a text message came from the bridge")
                got += msg
            check(got == want, "bridged bytes differ (%d vs %d)" % (len(got), len(want)))


async def sc_deflate(url, args):
    """args[0] "on": permessage-deflate must be negotiated end to end (client and backend
    agree), "off": by neither. Compressible messages echo intact either way."""
    want = args[0] == "on"
    opts = dict(OPTS, compression="deflate")
    async with websockets.connect(url, **opts) as ws:
        mine = ",".join(e.name for e in ws.extensions)
        check(mine == ("permessage-deflate" if want else ""), "client extensions %r" % mine)
        await ws.send("cmd:extensions")
        theirs = await asyncio.wait_for(ws.recv(), 5)
        check(theirs == mine, "backend extensions %r, client's %r" % (theirs, mine))
        for i in range(4):
            for msg in ["compress me %d " % i * 4000, bytes(65536), "é✓" * 1000]:
                await ws.send(msg)
                got = await asyncio.wait_for(ws.recv(), 5)
                check(got == msg, "echo of a %d-byte message differs" % len(msg))


async def sc_refused(url, args):
    try:
        async with websockets.connect(url, **OPTS):
            pass
    except websockets.exceptions.InvalidStatusCode as e:
        check(e.status_code == int(args[0]), "status %d, expected %s" % (e.status_code,
                                                                         args[0]))
        return
    raise Fail("the handshake succeeded")


SCENARIOS = {
    "echo": sc_echo, "subprotocol": sc_subprotocol, "headers": sc_headers,
    "too_big": sc_too_big, "rate_close": sc_rate_close, "rate_delay": sc_rate_delay,
    "ping": sc_ping, "keepalive": sc_keepalive, "close_client": sc_close_client,
    "close_backend": sc_close_backend, "idle": sc_idle, "bridge": sc_bridge,
    "refused": sc_refused, "backend_abort": sc_backend_abort, "deflate": sc_deflate,
}


async def client_main(args):
    url, name, rest = args[0], args[1], args[2:]
    try:
        await asyncio.wait_for(SCENARIOS[name](url, rest), 60)
    except Fail as e:
        print("%s: %s" % (name, e), flush=True)
        return 1
    except Exception as e:      # anything unexpected is a failure with its description
        print("%s: %s: %s" % (name, type(e).__name__, e), flush=True)
        return 1
    return 0


def main():
    if len(sys.argv) < 2 or sys.argv[1] not in ("backend", "client"):
        print(__doc__, file=sys.stderr)
        return 2
    if sys.argv[1] == "backend":
        try:
            asyncio.run(backend_main(sys.argv[2:]))
        except KeyboardInterrupt:
            pass
        return 0
    return asyncio.run(client_main(sys.argv[2:]))


if __name__ == "__main__":
    sys.exit(main())
