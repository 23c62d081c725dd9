#!/usr/bin/python3
"""tests/ws_conformance.py - RFC 6455 conformance of corogate's WebSocket relay.

A raw-frame client in the spirit of the Autobahn testsuite's fuzzingclient: standard
library sockets only (no websockets library, which would refuse to send most of these
frames), run THROUGH corogate to an echo backend (`corogate-loadgen serve --mode ws`).
Run with /usr/bin/python3.

  ws_conformance.py run HOST:PORT [--max-message-size N] [--peer-path PATH
                                   --peer-log FILE] [--strip-addr HOST:PORT]
                                   [--only NAME,...] [--list]
      Runs every case (or those named, or whose group is named: --only ping,close/empty)
      against ws://HOST:PORT/. Prints one line per failing case ("FAIL name: what
      happened") and a summary ("cases: N, passed: P, failed: F"); exits 1 when a case
      failed, 0 otherwise.
      --max-message-size: the listener's max_message_size in bytes (the 1009 cases).
      --peer-path, --peer-log: a path that the gateway routes to a `peer` (below), and
      that peer's log. The cases marked "(peer)" in --list go there: those that check
      what the backend receives, and those whose outcome depends on a backend that
      answers a close only after echoing every message that came before it (the
      bundled echo backend, over wslay's event API, sends its close answer ahead of
      echoes still queued) or that knows close codes 1012-1014 (wslay 1.1 answers them
      with 1002).
      --strip-addr: a listener with permessage_deflate = strip that routes PATH to the
      same peer (the cases marked "(strip)").

  ws_conformance.py peer LOGFILE
      A raw WebSocket echo backend: it accepts the opening handshake, echoes each message
      (reassembled, one frame, same type) and answers a close with the same payload,
      in the order they came. It appends to LOGFILE, per connection N: "open N OFFER"
      (the Sec-WebSocket-Extensions it was offered, "-" for none),
      "frame N OP LEN FIN" (once a header is in), "close N CODE" (a close frame), and at
      the end "eof N" (TCP FIN), "reset N" or "error-WHAT N". Prints "READY <port>" once
      listening.

Messages are compared reassembled, never by frame boundaries: the gateway may forward a
message in other fragments than it received. Each case has its own connection, so a case
that ends in a close does not disturb the next. Frames from the gateway are checked too:
unmasked, no RSV bits, minimal length encoding, control frames short and unfragmented.
"""
import base64
import hashlib
import os
import select
import socket
import struct
import sys
import threading
import time
import zlib

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
CONT, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
WAIT_S = 10.0           # how long any one expected event may take (a generous deadline)
QUIET_S = 0.5           # how long to listen for something that must NOT come


class Fail(Exception):
    pass


def check(cond, what):
    if not cond:
        raise Fail(what)


def frame(op, payload=b"", fin=True, rsv=0, mask=True, length=None):
    """One frame's bytes. <rsv> is the 3 RSV bits (4 = RSV1); <length> overrides the
    length written in the header (the payload stays what it is)."""
    if isinstance(payload, str):
        payload = payload.encode()
    n = len(payload) if length is None else length
    head = bytes([(0x80 if fin else 0) | (rsv << 4) | op])
    mbit = 0x80 if mask else 0
    if n < 126:
        head += bytes([mbit | n])
    elif n < 65536:
        head += bytes([mbit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([mbit | 127]) + struct.pack("!Q", n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + xor(payload, key)


def xor(data, key):
    if not data:
        return b""
    k = (key * (len(data) // 4 + 1))[: len(data)]
    return (int.from_bytes(data, "big") ^ int.from_bytes(k, "big")).to_bytes(len(data), "big")


def close_payload(code, reason=b""):
    if isinstance(reason, str):
        reason = reason.encode()
    return struct.pack("!H", code) + reason


def handshake_request(path, host, key, offer=None):
    return ("GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n%s\r\n"
            % (path, host, key, "Sec-WebSocket-Extensions: %s\r\n" % offer if offer else "")
            ).encode()


def deflate(data):
    """A message's payload under permessage-deflate (RFC 7692 7.2.1), no context kept."""
    z = zlib.compressobj(wbits=-15)
    out = z.compress(data) + z.flush(zlib.Z_SYNC_FLUSH)
    return out[:-4] if out.endswith(b"\x00\x00\xff\xff") else out


def inflate(data):
    return zlib.decompressobj(wbits=-15).decompress(data + b"\x00\x00\xff\xff")


def accept_of(key):
    return base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()


class Conn:
    """A client connection. Sending also reads (into self.rx), so a large write never
    deadlocks against an echo that comes back while we are still sending."""

    def __init__(self, addr, path, offer=None):
        self.sock = socket.create_connection(addr, timeout=WAIT_S)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.setblocking(False)
        self.rx = bytearray()
        self.eof = None             # None, "eof" or "reset"
        key = base64.b64encode(os.urandom(16)).decode()
        self.send(handshake_request(path, "%s:%d" % addr, key, offer))
        end = time.monotonic() + WAIT_S
        while b"\r\n\r\n" not in self.rx:
            check(self.pull(end), "the opening handshake got no answer (%r)" % bytes(self.rx))
        head, _, rest = bytes(self.rx).partition(b"\r\n\r\n")
        self.rx = bytearray(rest)
        lines = head.decode("latin-1").split("\r\n")
        check(lines[0].startswith("HTTP/1.1 101 "), "opening answered %r" % lines[0])
        hdrs = {l.split(":", 1)[0].strip().lower(): l.split(":", 1)[1].strip()
                for l in lines[1:] if ":" in l}
        check(hdrs.get("sec-websocket-accept") == accept_of(key),
              "Sec-WebSocket-Accept %r" % hdrs.get("sec-websocket-accept"))
        self.ext = hdrs.get("sec-websocket-extensions") or ""
        self.deflate = "permessage-deflate" in self.ext
        self.rsv1 = 0               # of the last message event() returned

    def close(self):
        self.sock.close()

    def pull(self, end):
        """Reads what is there, waiting until <end> at most. Returns False at EOF, reset or
        the deadline."""
        if self.eof:
            return False
        left = end - time.monotonic()
        if left <= 0:
            return False
        r, _, _ = select.select([self.sock], [], [], left)
        if not r:
            return False
        try:
            data = self.sock.recv(1 << 20)
        except ConnectionResetError:
            self.eof = "reset"
            return False
        except BlockingIOError:
            return True
        if not data:
            self.eof = "eof"
            return False
        self.rx += data
        return True

    def send(self, *frames):
        """Writes <frames> in one write (as far as the kernel takes them), reading
        meanwhile. Returns False when the peer closed or reset before all was written."""
        data = memoryview(b"".join(frames))
        end = time.monotonic() + WAIT_S * 3
        while data:
            check(time.monotonic() < end, "could not write %d bytes" % len(data))
            r, w, _ = select.select([self.sock] if not self.eof else [], [self.sock], [], 1)
            if r:
                self.pull(time.monotonic() + 0.01)
            if w:
                try:
                    n = self.sock.send(data)
                except (BrokenPipeError, ConnectionResetError):
                    return False
                except BlockingIOError:
                    continue
                data = data[n:]
        return True

    def need(self, n, end):
        while len(self.rx) < n:
            if not self.pull(end):
                return False
        return True

    def frame(self, timeout=WAIT_S):
        """The next frame from the gateway: (fin, op, payload), or None at EOF, reset or
        the deadline (self.eof tells which). Checks what a server must not send."""
        end = time.monotonic() + timeout
        if not self.need(2, end):
            return None
        b0, b1 = self.rx[0], self.rx[1]
        fin, rsv, op, masked, n = b0 >> 7, (b0 >> 4) & 7, b0 & 15, b1 >> 7, b1 & 127
        hl = 2 + (2 if n == 126 else 8 if n == 127 else 0) + (4 if masked else 0)
        if not self.need(hl, end):
            return None
        if n == 126:
            n = struct.unpack("!H", self.rx[2:4])[0]
            check(n >= 126, "the gateway sent a 16-bit length of %d" % n)
        elif n == 127:
            n = struct.unpack("!Q", self.rx[2:10])[0]
            check(n >= 65536, "the gateway sent a 64-bit length of %d" % n)
        check(not masked, "the gateway sent a masked frame")
        check(rsv == 0 or (rsv == 4 and self.deflate and op in (TEXT, BINARY)),
              "the gateway sent RSV bits %d on opcode %d (extensions: %r)" % (rsv, op,
                                                                           self.ext))
        self.frame_rsv = rsv
        check(op in (CONT, TEXT, BINARY, CLOSE, PING, PONG), "the gateway sent opcode %d" % op)
        if op >= 8:
            check(fin and n <= 125, "the gateway sent a control frame of %d bytes, FIN %d"
                  % (n, fin))
        if not self.need(hl + n, end):
            return None
        payload = bytes(self.rx[hl:hl + n])
        del self.rx[:hl + n]
        return fin, op, payload

    def event(self, timeout=WAIT_S):
        """The next thing the gateway says: ("text"|"binary", bytes), ("ping"|"pong",
        payload), ("close", code or None, reason bytes), ("eof"|"reset"|"timeout", None).
        Messages come reassembled; pings from the gateway are answered and skipped."""
        end = time.monotonic() + timeout
        msg_op, parts = None, []
        while True:
            f = self.frame(max(0.0, end - time.monotonic()))
            if f is None:
                return (self.eof or "timeout", None)
            fin, op, payload = f
            if op == PING:
                self.send(frame(PONG, payload))
                continue
            if op == PONG:
                return ("pong", payload)
            if op == CLOSE:
                check(len(payload) != 1, "the gateway sent a 1-byte close")
                if not payload:
                    return ("close", None, b"")
                return ("close", struct.unpack("!H", payload[:2])[0], payload[2:])
            if op == CONT:
                check(msg_op is not None, "the gateway sent a continuation of nothing")
            else:
                check(msg_op is None, "the gateway began a message inside another")
                msg_op = op
                self.rsv1 = self.frame_rsv >> 2
            parts.append(payload)
            if fin:
                return ("text" if msg_op == TEXT else "binary", b"".join(parts))


def describe(ev):
    if ev[0] in ("text", "binary"):
        p = ev[1]
        return "%s message of %d bytes (%r%s)" % (ev[0], len(p), p[:40], "..." if len(p) > 40
                                                    else "")
    if ev[0] == "close":
        return "close %s %r" % (ev[1], ev[2])
    return "%s %r" % ev[:2]


# ------------------------------------------------------------------ expectations

def expect_msg(c, kind, data, what=""):
    if isinstance(data, str):
        data = data.encode()
    ev = c.event()
    check(ev[0] == kind and ev[1] == data,
          "%sexpected the echo, a %s message of %d bytes; got %s"
          % (what + ": " if what else "", kind, len(data), describe(ev)))


def expect_pong(c, payload, what=""):
    ev = c.event()
    check(ev == ("pong", payload), "%sexpected a pong %r; got %s"
          % (what + ": " if what else "", payload[:40], describe(ev)))


def finish_close(c, code):
    """After the gateway's close: answer it, then the gateway must end the connection."""
    c.send(frame(CLOSE, close_payload(code) if code else b""))
    end = time.monotonic() + WAIT_S
    while c.pull(end):
        pass
    check(c.eof, "the connection stayed open after the close handshake")


def expect_close(c, code, reason=None):
    """The next event is a close with <code> (None: an empty close) and, if given,
    <reason>; nothing may come before it."""
    ev = c.event()
    check(ev[0] == "close", "expected close %s; got %s" % (code, describe(ev)))
    check(ev[1] == code, "expected close %s; got close %s %r" % (code, ev[1], ev[2]))
    if reason is not None:
        check(ev[2] == reason, "close %s came with reason %r, expected %r"
              % (code, ev[2], reason))
    finish_close(c, ev[1])


def expect_quiet(c):
    """Nothing comes for a moment (used only where the next step proves progress anyway)."""
    ev = c.event(QUIET_S)
    check(ev[0] == "timeout", "expected nothing; got %s" % describe(ev))


# ------------------------------------------------------------------ cases

CASES = []


def case(name, peer=False, offer=None, strip=False):
    """Registers a case; with <peer>, its connection goes to the Python peer (see main())
    instead of the echo backend, with <strip> through the permessage_deflate = strip
    listener; <offer> is the Sec-WebSocket-Extensions it sends."""
    def add(fn):
        CASES.append((name, fn, (peer or strip, offer, strip)))
        return fn
    return add


def text_of(n, seed=0):
    """<n> bytes of ASCII text."""
    return bytes(97 + (i * 7 + seed) % 26 for i in range(n))


def binary_of(n):
    return os.urandom(n)


def echo_case(kind, n):
    def run(c, opt):
        data = text_of(n) if kind == "text" else binary_of(n)
        c.send(frame(TEXT if kind == "text" else BINARY, data))
        expect_msg(c, kind, data)
    return run


for _kind in ("text", "binary"):
    for _n in (0, 125, 126, 127, 65535, 65536, 256 * 1024):
        case("framing/%s-%d" % (_kind, _n))(echo_case(_kind, _n))


@case("framing/many-in-one-write")
def _(c, opt):
    msgs = [text_of(i * 37 % 300, i) for i in range(50)]
    c.send(*[frame(TEXT, m) for m in msgs])
    for i, m in enumerate(msgs):
        expect_msg(c, "text", m, "message %d of 50" % i)


@case("fragments/1-byte")
def _(c, opt):
    data = b"Hello, fragmented world"
    frames = [frame(TEXT if i == 0 else CONT, data[i:i + 1], fin=i == len(data) - 1)
              for i in range(len(data))]
    c.send(*frames)
    expect_msg(c, "text", data)


@case("fragments/empty")
def _(c, opt):
    c.send(frame(TEXT, b"", fin=False), frame(CONT, b"", fin=False), frame(CONT, b"abc",
           fin=False), frame(CONT, b"", fin=False), frame(CONT, b"", fin=True))
    expect_msg(c, "text", b"abc")
    c.send(frame(BINARY, b"", fin=False), frame(CONT, b"", fin=True))
    expect_msg(c, "binary", b"")


@case("fragments/64x1k")
def _(c, opt):
    data = binary_of(64 * 1024)
    c.send(*[frame(BINARY if i == 0 else CONT, data[i * 1024:(i + 1) * 1024], fin=i == 63)
             for i in range(64)])
    expect_msg(c, "binary", data)


@case("fragments/text-then-binary")
def _(c, opt):
    c.send(frame(TEXT, b"one ", fin=False), frame(CONT, b"two"),
           frame(BINARY, b"\x00\x01", fin=False), frame(CONT, b"\x02"))
    expect_msg(c, "text", b"one two")
    expect_msg(c, "binary", b"\x00\x01\x02")


@case("ping/one")
def _(c, opt):
    c.send(frame(PING, b"hello"))
    expect_pong(c, b"hello")


@case("ping/empty")
def _(c, opt):
    c.send(frame(PING, b""))
    expect_pong(c, b"")


@case("ping/125-bytes")
def _(c, opt):
    payload = binary_of(125)
    c.send(frame(PING, payload))
    expect_pong(c, payload)


@case("ping/ten-in-one-write")
def _(c, opt):
    c.send(*[frame(PING, b"ping %d" % i) for i in range(10)])
    for i in range(10):
        expect_pong(c, b"ping %d" % i, "pong %d of 10" % (i + 1))


@case("ping/ten-with-messages")
def _(c, opt):
    frames = []
    for i in range(10):
        frames += [frame(PING, b"p%d" % i), frame(TEXT, b"m%d" % i)]
    c.send(*frames)
    pongs, msgs = [], []
    while len(pongs) < 10 or len(msgs) < 10:
        ev = c.event()
        if ev[0] == "pong":
            pongs.append(ev[1])
        elif ev[0] == "text":
            msgs.append(ev[1])
        else:
            raise Fail("after %d pongs and %d echoes: %s" % (len(pongs), len(msgs),
                                                             describe(ev)))
    check(pongs == [b"p%d" % i for i in range(10)], "pongs out of order: %r" % pongs)
    check(msgs == [b"m%d" % i for i in range(10)], "echoes out of order: %r" % msgs)


@case("ping/between-fragments")
def _(c, opt):
    # The pong must come while the message is unfinished: the rest is sent only after it.
    c.send(frame(TEXT, b"first half, ", fin=False), frame(PING, b"mid-message"))
    expect_pong(c, b"mid-message", "ping after the first fragment")
    c.send(frame(CONT, b"second half"))
    expect_msg(c, "text", b"first half, second half")


@case("ping/between-many-fragments")
def _(c, opt):
    data = binary_of(10 * 1000)
    frames = []
    for i in range(10):
        frames.append(frame(BINARY if i == 0 else CONT, data[i * 1000:(i + 1) * 1000],
                            fin=False))
        frames.append(frame(PING, b"f%d" % i))
    frames.append(frame(CONT, b""))
    c.send(*frames)
    for i in range(10):
        expect_pong(c, b"f%d" % i, "pong %d of 10" % (i + 1))
    expect_msg(c, "binary", data)


@case("pong/unsolicited-ignored")
def _(c, opt):
    c.send(frame(PONG, b"nobody asked"), frame(PONG, b""), frame(TEXT, b"after pongs"))
    expect_msg(c, "text", b"after pongs", "the first thing back")


def violation_case(frames, code, before=()):
    """Sends <before> messages (echoed first) and <frames> in one write; then close
    <code>."""
    def run(c, opt):
        c.send(*([frame(TEXT, m) for m in before] + list(frames)))
        for m in before:
            expect_msg(c, "text", m, "a valid message before the violation")
        expect_close(c, code)
    return run


for _rsv in (1, 2, 4):
    case("reserved/rsv%d-text" % {4: 1, 2: 2, 1: 3}[_rsv])(
        violation_case([frame(TEXT, b"rsv", rsv=_rsv)], 1002))
case("reserved/rsv1-ping")(violation_case([frame(PING, b"rsv", rsv=4)], 1002))
case("reserved/rsv2-continuation")(violation_case(
    [frame(TEXT, b"a", fin=False), frame(CONT, b"b", rsv=2)], 1002))
for _op in (3, 4, 5, 6, 7, 11, 12, 13, 14, 15):
    case("reserved/opcode-%d" % _op)(violation_case([frame(_op, b"x")], 1002))
    case("reserved/opcode-%d-empty" % _op)(violation_case([frame(_op, b"")], 1002))

for _op, _name in ((PING, "ping"), (PONG, "pong"), (CLOSE, "close")):
    _big = close_payload(1000, "x" * 124) if _op == CLOSE else b"x" * 126
    case("control/%s-126-bytes" % _name)(violation_case([frame(_op, _big)], 1002))
    _small = close_payload(1000) if _op == CLOSE else b"x"
    case("control/%s-fragmented" % _name)(violation_case(
        [frame(_op, _small, fin=False), frame(CONT, b"", fin=True)], 1002))
case("control/ping-64bit-length")(violation_case([frame(PING, b"\0" * 70000)], 1002))

case("fragments/continuation-of-nothing")(violation_case([frame(CONT, b"x")], 1002))
case("fragments/text-inside-message")(violation_case(
    [frame(TEXT, b"a", fin=False), frame(TEXT, b"b")], 1002))
case("fragments/binary-inside-message")(violation_case(
    [frame(BINARY, b"a", fin=False), frame(BINARY, b"b", fin=False), frame(CONT, b"c")],
    1002))
case("masking/unmasked-text")(violation_case([frame(TEXT, b"plain", mask=False)], 1002))
case("masking/unmasked-ping")(violation_case([frame(PING, b"plain", mask=False)], 1002))
case("masking/unmasked-empty")(violation_case([frame(BINARY, b"", mask=False)], 1002))


@case("fragments/continuation-after-message", peer=True)
def _(c, opt):
    c.send(frame(TEXT, b"done"), frame(CONT, b"more"))
    expect_msg(c, "text", b"done")
    expect_close(c, 1002)


case("order/valid-then-rsv", peer=True)(violation_case([frame(TEXT, b"bad", rsv=4)], 1002,
                                            before=[b"one", b"two", b"three"]))
case("order/valid-then-opcode", peer=True)(violation_case([frame(5, b"bad")], 1002,
                                               before=[b"m%d" % i for i in range(20)]))
case("order/valid-then-unmasked", peer=True)(violation_case(
    [frame(TEXT, b"bad", mask=False)], 1002, before=[b"just one"]))


@case("order/ping-then-violation", peer=True)
def _(c, opt):
    c.send(frame(PING, b"first"), frame(TEXT, b"echoed"), frame(7, b""))
    expect_pong(c, b"first")
    expect_msg(c, "text", b"echoed")
    expect_close(c, 1002)


# UTF-8. Valid text split across fragments at every byte position.
UTF8_TEXT = "aé€𝄞zÿ中文😀".encode()


@case("utf8/valid-single-frame")
def _(c, opt):
    for s in ["κόσμε", "\u0080", "\u07ff", "\u0800", "\uffff", "\U00010000", "\U0010ffff",
              "\ud7ff", "\ue000", "\ufffd"]:
        c.send(frame(TEXT, s.encode()))
        expect_msg(c, "text", s.encode(), "U+%04X" % ord(s[0]))


@case("utf8/valid-split-everywhere")
def _(c, opt):
    for i in range(1, len(UTF8_TEXT)):
        c.send(frame(TEXT, UTF8_TEXT[:i], fin=False), frame(CONT, UTF8_TEXT[i:]))
        expect_msg(c, "text", UTF8_TEXT, "split at byte %d" % i)


@case("utf8/valid-byte-per-fragment")
def _(c, opt):
    t = UTF8_TEXT
    c.send(*[frame(TEXT if i == 0 else CONT, t[i:i + 1], fin=i == len(t) - 1)
             for i in range(len(t))])
    expect_msg(c, "text", t)


@case("utf8/valid-split-in-separate-writes")
def _(c, opt):
    t = "€".encode()
    c.send(frame(TEXT, b"x" + t[:1], fin=False))
    expect_quiet(c)
    c.send(frame(CONT, t[1:2], fin=False))
    c.send(frame(CONT, t[2:]))
    expect_msg(c, "text", b"x" + t)


INVALID_UTF8 = [
    ("overlong-2", b"\xc0\xaf"), ("overlong-2-nul", b"\xc0\x80"),
    ("overlong-3", b"\xe0\x80\xaf"), ("overlong-4", b"\xf0\x80\x80\xaf"),
    ("surrogate-high", b"\xed\xa0\x80"), ("surrogate-low", b"\xed\xbf\xbf"),
    ("above-10ffff", b"\xf4\x90\x80\x80"), ("f5-lead", b"\xf5\x80\x80\x80"),
    ("ff-byte", b"\xff"), ("lone-continuation", b"\x80"),
    ("truncated-at-end-2", b"\xc3"), ("truncated-at-end-3", b"\xe2\x82"),
    ("truncated-at-end-4", b"\xf0\x9f\x98"),
]

for _name, _bad in INVALID_UTF8:
    case("utf8/invalid-%s" % _name)(violation_case([frame(TEXT, b"ok " + _bad)], 1007))
    # split: the first fragment ends inside the bad sequence (or just before it)
    _p = b"ok " + _bad
    case("utf8/invalid-%s-split" % _name)(violation_case(
        [frame(TEXT, _p[:4], fin=False), frame(CONT, _p[4:], fin=False),
         frame(CONT, b"", fin=True)], 1007))
case("utf8/truncated-at-message-end-split")(violation_case(
    [frame(TEXT, b"\xf0\x9f", fin=False), frame(CONT, b"\x98", fin=True)], 1007))
case("utf8/invalid-after-valid", peer=True)(violation_case(
    [frame(TEXT, b"\xe2\x82\xac\xed\xa0\x80")], 1007, before=[UTF8_TEXT]))


@case("utf8/invalid-in-first-fragment-fails-fast")
def _(c, opt):
    # The message is never finished: the close must come from the first fragment alone.
    c.send(frame(TEXT, b"abc\xff", fin=False))
    expect_close(c, 1007)


@case("utf8/binary-is-not-checked")
def _(c, opt):
    c.send(frame(BINARY, b"\xff\xc0\xaf\xed\xa0\x80"))
    expect_msg(c, "binary", b"\xff\xc0\xaf\xed\xa0\x80")


# Close codes.
for _code in list(range(1000, 1004)) + list(range(1007, 1015)) + [3000, 3999, 4000, 4999]:
    def _run(c, opt, code=_code):
        reason = b"reason %d \xe2\x9c\x93" % code
        c.send(frame(CLOSE, close_payload(code, reason)))
        ev = c.event()
        check(ev[0] == "close", "expected close %d back; got %s" % (code, describe(ev)))
        check(ev[1] == code and ev[2] == reason, "sent close %d %r; got close %s %r"
              % (code, reason, ev[1], ev[2]))
        end = time.monotonic() + WAIT_S
        while c.pull(end):
            pass
        check(c.eof, "the connection stayed open after the close handshake")
    case("close/code-%d" % _code, peer=True)(_run)

for _code in (0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535):
    case("close/invalid-code-%d" % _code)(violation_case([frame(CLOSE, close_payload(_code))],
                                                        1002))
case("close/1-byte-payload")(violation_case([frame(CLOSE, b"\x03")], 1002))
case("close/invalid-utf8-reason")(violation_case(
    [frame(CLOSE, close_payload(1000, b"bad \xed\xa0\x80"))], 1007))
case("close/truncated-utf8-reason")(violation_case(
    [frame(CLOSE, close_payload(1000, b"bad \xe2\x82"))], 1007))


@case("close/empty")
def _(c, opt):
    c.send(frame(CLOSE, b""))
    ev = c.event()
    check(ev[0] == "close", "expected a close back; got %s" % describe(ev))
    check(ev[1] in (None, 1000), "an empty close answered with %s %r" % ev[1:])
    end = time.monotonic() + WAIT_S
    while c.pull(end):
        pass
    check(c.eof, "the connection stayed open after the close handshake")


@case("close/nothing-after-close", peer=True)
def _(c, opt):
    c.send(frame(TEXT, b"before"), frame(CLOSE, close_payload(1000, b"bye")),
           frame(TEXT, b"after"), frame(PING, b"after"))
    expect_msg(c, "text", b"before")
    ev = c.event()
    check(ev[:2] == ("close", 1000), "expected close 1000; got %s" % describe(ev))
    end = time.monotonic() + WAIT_S
    while True:
        ev = c.event(max(0.0, end - time.monotonic()))
        if ev[0] in ("eof", "reset"):
            break
        raise Fail("after the close: %s" % describe(ev))


@case("close/nothing-after-close-later-write")
def _(c, opt):
    c.send(frame(CLOSE, close_payload(1000, b"bye")))
    ev = c.event()
    check(ev[:2] == ("close", 1000), "expected close 1000; got %s" % describe(ev))
    c.send(frame(TEXT, b"too late"))
    ev = c.event()
    check(ev[0] in ("eof", "reset"), "after the close: %s" % describe(ev))


@case("close/inside-fragmented-message")
def _(c, opt):
    # A close may come between fragments (control frames may); the message is abandoned.
    c.send(frame(TEXT, b"never ", fin=False), frame(CLOSE, close_payload(1000, b"mid")))
    ev = c.event()
    check(ev[:2] == ("close", 1000), "expected close 1000; got %s" % describe(ev))


# Sizes.
@case("size/exactly-max-message-size")
def _(c, opt):
    data = binary_of(opt.max_message_size)
    c.send(frame(BINARY, data))
    expect_msg(c, "binary", data)


@case("size/over-max-one-frame", peer=True)
def _(c, opt):
    c.send(frame(TEXT, b"small"), frame(BINARY, binary_of(opt.max_message_size + 1)))
    expect_msg(c, "text", b"small")
    expect_close(c, 1009)


@case("size/over-max-fragmented")
def _(c, opt):
    half = opt.max_message_size // 2 + 1
    c.send(frame(BINARY, binary_of(half), fin=False), frame(CONT, binary_of(half)))
    expect_close(c, 1009)


@case("size/over-max-header-only")
def _(c, opt):
    # The header says it is too big: no need to wait for the rest of a payload that may
    # never come.
    c.send(frame(BINARY, binary_of(1024), length=opt.max_message_size + 1))
    expect_close(c, 1009)


@case("size/over-max-header-alone")
def _(c, opt):
    # Not one byte of the payload: the header alone is refused.
    c.send(frame(BINARY, b"", length=opt.max_message_size + 1))
    expect_close(c, 1009)


# permessage-deflate (RFC 7692), passed through: the client's offer goes to the backend, the
# backend's answer to the client, compressed frames (RSV1) relay untouched, and the gateway
# does not check the UTF-8 of compressed text (it cannot, and must not inflate to do so).
OFFER = "permessage-deflate; client_max_window_bits"


@case("deflate/negotiated-end-to-end", peer=True, offer=OFFER)
def _(c, opt):
    check(c.deflate, "the client's offer was not answered (Sec-WebSocket-Extensions: %r)"
          % c.ext)


def deflate_echo(c, kind, data, fragments=1):
    z = deflate(data)
    if kind == "text":
        try:
            z.decode()
            raise Fail("the compressed text happens to be valid UTF-8: pick other data")
        except UnicodeDecodeError:
            pass            # as intended: a gateway checking it would close 1007
    step = len(z) // fragments + 1
    pieces = [z[i:i + step] for i in range(0, len(z), step)]
    c.send(*[frame((TEXT if kind == "text" else BINARY) if i == 0 else CONT, p,
                   fin=i == len(pieces) - 1, rsv=4 if i == 0 else 0)
             for i, p in enumerate(pieces)])
    ev = c.event()
    check(ev[0] == kind, "expected a compressed %s message; got %s" % (kind, describe(ev)))
    check(c.rsv1, "the echo came without RSV1")
    check(inflate(ev[1]) == data, "the echo inflates to something else")


@case("deflate/compressed-text", peer=True, offer=OFFER)
def _(c, opt):
    check(c.deflate, "not negotiated (Sec-WebSocket-Extensions: %r)" % c.ext)
    deflate_echo(c, "text", "compressed text \u2713 ".encode() * 50)


@case("deflate/compressed-binary-fragmented", peer=True, offer=OFFER)
def _(c, opt):
    check(c.deflate, "not negotiated (Sec-WebSocket-Extensions: %r)" % c.ext)
    deflate_echo(c, "binary", bytes(range(256)) * 256, fragments=5)


@case("deflate/compressed-text-large", peer=True, offer=OFFER)
def _(c, opt):
    check(c.deflate, "not negotiated (Sec-WebSocket-Extensions: %r)" % c.ext)
    deflate_echo(c, "text", text_of(256 * 1024), fragments=3)


def peer_offer(opt):
    """What the peer was offered on the case's connection (the runner noted how many the
    peer had seen before it): the Sec-WebSocket-Extensions value, "-" for none."""
    with open(opt.peer_log) as f:
        for line in f:
            w = line.split(" ", 2)
            if w[0] == "open" and w[1].strip() == str(opt.peer_opens + 1):
                return w[2].strip() if len(w) > 2 else "-"
    raise Fail("the peer logged no open line for connection %d" % (opt.peer_opens + 1))


@case("deflate/unknown-extension-removed", peer=True,
      offer="x-webkit-deflate-frame, permessage-deflate; client_max_window_bits, foo")
def _(c, opt):
    # A relay cannot carry an extension it does not know: only permessage-deflate goes on.
    got = peer_offer(opt)
    check("permessage-deflate" in got and "x-webkit" not in got and "foo" not in got,
          "the backend was offered %r" % got)
    check(c.deflate, "not negotiated (Sec-WebSocket-Extensions: %r)" % c.ext)


@case("deflate-strip/offer-removed", strip=True, offer=OFFER)
def _(c, opt):
    check(peer_offer(opt) == "-", "the backend was offered %r" % peer_offer(opt))
    check(not c.ext, "the client got Sec-WebSocket-Extensions: %r" % c.ext)
    c.send(frame(TEXT, b"uncompressed"))
    expect_msg(c, "text", b"uncompressed")


@case("deflate-strip/rsv1-is-1002", strip=True, offer=OFFER)
def _(c, opt):
    c.send(frame(TEXT, deflate(b"compressed anyway"), rsv=4))
    expect_close(c, 1002)


@case("deflate/rsv1-on-ping", peer=True, offer=OFFER)
def _(c, opt):
    # RSV1 belongs to data messages only (RFC 7692 6.1); pings are the gateway's own.
    check(c.deflate, "not negotiated (Sec-WebSocket-Extensions: %r)" % c.ext)
    c.send(frame(PING, b"p", rsv=4))
    expect_close(c, 1002)


# What the backend receives when a client breaks the protocol in the middle of a large
# frame: the gateway has already forwarded part of the frame, and the backend must still
# get a close frame, not a bare TCP close or reset.
def recorded(opt, conn_id):
    """The peer's log lines for connection <conn_id>, waiting for its end."""
    end = time.monotonic() + WAIT_S
    while True:
        try:
            with open(opt.peer_log) as f:
                lines = [l.split() for l in f.read().splitlines()]
        except FileNotFoundError:
            lines = []
        mine = [l for l in lines if len(l) > 1 and l[1] == str(conn_id)]
        if any(l[0] in ("eof", "reset") for l in mine) or time.monotonic() > end:
            return mine
        time.sleep(0.05)


def peer_conns(opt):
    try:
        with open(opt.peer_log) as f:
            return sum(1 for l in f if l.startswith("open "))
    except FileNotFoundError:
        return 0


def mid_frame_case(first, rest, code):
    def run(c, opt):
        check(opt.peer_path, "needs --peer-path and --peer-log")
        c.close()
        before = peer_conns(opt)
        c = Conn(opt.addr, opt.peer_path)
        try:
            end = time.monotonic() + WAIT_S
            while peer_conns(opt) <= before:
                check(time.monotonic() < end, "the peer saw no connection")
                time.sleep(0.05)
            conn_id = before + 1
            c.send(first)
            end = time.monotonic() + WAIT_S          # until the peer has some payload
            while True:
                with open(opt.peer_log) as f:
                    if any(l.startswith("frame %d " % conn_id) for l in f):
                        break
                check(time.monotonic() < end, "the peer got no frame")
                time.sleep(0.05)
            c.send(rest)
            expect_close(c, code)
        finally:
            c.close()
        lines = recorded(opt, conn_id)
        closes = [l for l in lines if l[0] == "close"]
        ends = [l[0] for l in lines if l[0] in ("eof", "reset")]
        check(closes, "the backend got no close frame; it saw: %s"
              % "; ".join(" ".join(l) for l in lines))
        check(ends and ends[0] == "eof", "the backend's connection ended by %s"
              % (ends[0] if ends else "nothing (still open)"))
    return run


def _bad_text_frame():
    """A 256 KiB text frame whose payload turns invalid after 64 KiB, cut in two: its
    header and first 64 KiB, then 64 invalid bytes (the rest of the frame never comes)."""
    data = bytearray(text_of(256 * 1024))
    data[64 * 1024:64 * 1024 + 64] = b"\xff" * 64
    f = frame(TEXT, bytes(data))
    hl = 2 + 8 + 4
    return f[:hl + 64 * 1024], f[hl + 64 * 1024:hl + 64 * 1024 + 64]


case("backend/close-after-bad-utf8-mid-frame")(mid_frame_case(*_bad_text_frame(), 1007))
case("backend/close-after-too-big-mid-message")(mid_frame_case(
    frame(BINARY, binary_of(64 * 1024), fin=False),
    frame(CONT, binary_of(2 * 1024 * 1024)), 1009))


# ------------------------------------------------------------------ running

class Opt:
    pass


def run_cases(argv):
    opt = Opt()
    host, port = argv[0].rsplit(":", 1)
    opt.addr = (host, int(port))
    opt.max_message_size = 1 << 20
    opt.peer_path = opt.peer_log = opt.strip_addr = None
    only = None
    i = 1
    while i < len(argv):
        if argv[i] == "--max-message-size":
            opt.max_message_size = int(argv[i + 1])
        elif argv[i] == "--peer-path":
            opt.peer_path = argv[i + 1]
        elif argv[i] == "--strip-addr":
            h, p = argv[i + 1].rsplit(":", 1)
            opt.strip_addr = (h, int(p))
        elif argv[i] == "--peer-log":
            opt.peer_log = argv[i + 1]
        elif argv[i] == "--only":
            only = argv[i + 1].split(",")
        elif argv[i] == "--list":
            for name, _, (peer, offer, strip) in CASES:
                print(name + (" (strip)" if strip else " (peer)" if peer else ""))
            return 0
        else:
            print("unknown option %s" % argv[i], file=sys.stderr)
            return 2
        i += 2
    failed = 0
    cases = [(n, f, p) for n, f, p in CASES if only is None or n in only
             or any(n.startswith(o + "/") for o in only)]
    if not cases:
        print("no case matches %s" % only, file=sys.stderr)
        return 2
    for name, fn, (peer, offer, strip) in cases:
        c = None
        try:
            check(opt.peer_path or not peer, "needs --peer-path and --peer-log")
            check(opt.strip_addr or not strip, "needs --strip-addr")
            opt.peer_opens = peer_conns(opt) if peer else 0
            c = Conn(opt.strip_addr if strip else opt.addr, opt.peer_path if peer else "/",
                     offer)
            fn(c, opt)
        except Fail as e:
            failed += 1
            print("FAIL %s: %s" % (name, e), flush=True)
        except (OSError, ValueError) as e:
            failed += 1
            print("FAIL %s: %s: %s" % (name, type(e).__name__, e), flush=True)
        finally:
            if c:
                c.close()
    # Bad input never takes the daemon down: it still echoes afterwards.
    try:
        c = Conn(opt.addr, "/")
        c.send(frame(TEXT, b"still serving"))
        expect_msg(c, "text", b"still serving")
        c.close()
    except (Fail, OSError) as e:
        failed += 1
        print("FAIL after-all/still-serving: %s" % e, flush=True)
    print("cases: %d, passed: %d, failed: %d" % (len(cases), len(cases) - failed, failed),
          flush=True)
    return 1 if failed else 0


# ------------------------------------------------------------------ peer

def serve_peer(logfile):
    lock = threading.Lock()
    count = [0]

    def log(line):
        with lock:
            with open(logfile, "a") as f:
                f.write(line + "\n")

    def serve(s):
        with lock:
            count[0] += 1
            n = count[0]
        buf = bytearray()
        msg_op, parts, compressed = None, [], False

        def need(k):
            while len(buf) < k:
                d = s.recv(65536)
                if not d:
                    raise EOFError
                buf.extend(d)
        try:
            while b"\r\n\r\n" not in buf:
                d = s.recv(4096)
                if not d:
                    raise EOFError
                buf.extend(d)
            head, _, rest = bytes(buf).partition(b"\r\n\r\n")
            buf[:] = rest
            hdrs = {l.split(b":", 1)[0].strip().lower(): l.split(b":", 1)[1].strip()
                    for l in head.split(b"\r\n")[1:] if b":" in l}
            key = hdrs[b"sec-websocket-key"].decode()
            # permessage-deflate when offered, without context takeover (each message is
            # compressed on its own, both ways: the simplest that RFC 7692 allows)
            pmd = b"permessage-deflate" in hdrs.get(b"sec-websocket-extensions", b"")
            log("open %d %s" % (n, hdrs.get(b"sec-websocket-extensions", b"-").decode()))
            # (logged before the 101: the client counts on it once it has its answer)
            s.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                      b"Connection: Upgrade\r\nSec-WebSocket-Accept: "
                      + accept_of(key).encode() + b"\r\n"
                      + (b"Sec-WebSocket-Extensions: permessage-deflate; "
                         b"server_no_context_takeover; client_no_context_takeover\r\n"
                         if pmd else b"") + b"\r\n")
            while True:
                need(2)
                fin, rsv1, op, ln = buf[0] >> 7, buf[0] >> 6 & 1, buf[0] & 15, buf[1] & 127
                hl = 2 + (2 if ln == 126 else 8 if ln == 127 else 0) + (
                    4 if buf[1] & 0x80 else 0)
                need(hl)
                if ln == 126:
                    ln = struct.unpack("!H", buf[2:4])[0]
                elif ln == 127:
                    ln = struct.unpack("!Q", buf[2:10])[0]
                log("frame %d %d %d %d" % (n, op, ln, fin))
                need(hl + ln)
                payload = bytes(buf[hl:hl + ln])
                if buf[1] & 0x80:
                    payload = xor(payload, bytes(buf[hl - 4:hl]))
                del buf[:hl + ln]
                if op == CLOSE:
                    code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                    log("close %d %d" % (n, code))
                    s.sendall(frame(CLOSE, payload, mask=False))
                    s.shutdown(socket.SHUT_WR)  # a server closes first; we then read to EOF
                elif op == PING:
                    s.sendall(frame(PONG, payload, mask=False))
                elif op in (TEXT, BINARY, CONT):
                    if op != CONT:
                        msg_op, parts, compressed = op, [], pmd and rsv1
                    parts.append(payload)
                    if fin and msg_op is not None:
                        data = b"".join(parts)
                        if compressed:
                            log("compressed %d %d" % (n, len(data)))
                            data = deflate(inflate(data))
                        s.sendall(frame(msg_op, data, rsv=4 if compressed else 0,
                                        mask=False))
                        msg_op, parts = None, []
            how = "eof"
        except EOFError:
            how = "eof"
        except ConnectionResetError:
            how = "reset"
        except OSError as e:
            how = "error-" + type(e).__name__
        log("%s %d" % (how, n))
        s.close()

    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(64)
    print("READY %d" % ls.getsockname()[1], flush=True)
    while True:
        s, _ = ls.accept()
        threading.Thread(target=serve, args=(s,), daemon=True).start()


def main():
    if len(sys.argv) >= 3 and sys.argv[1] == "run":
        return run_cases(sys.argv[2:])
    if len(sys.argv) == 3 and sys.argv[1] == "peer":
        try:
            serve_peer(sys.argv[2])
        except KeyboardInterrupt:
            pass
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
