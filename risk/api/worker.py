"""A gunicorn gthread worker that receives each request whole before a thread handles it.

gunicorn's gthread worker hands a connection to a thread as soon as its first byte arrives; the
thread then reads the rest of the request, however slowly it comes. A few clients sending a byte
now and then hold every thread, and nobody else is answered. This worker reads headers and body
in its event loop instead, without blocking, and passes the connection to a thread only once the
whole request is in memory (or once it is larger than the API accepts, so that the app can refuse
it at once). A slow client then costs a connection slot and its bytes, never a thread, and one
that has not finished sending its request within ``RISK_API_READ_TIMEOUT`` seconds (default 60)
is answered 408 and disconnected.

Pipelined requests (a client that sends its next request before the answer to the last one):
the bytes after a request are read with it. Once a request is answered, a next one already in
hand whole goes to a thread at once; waiting for the socket to become readable again would
wait for bytes that have already arrived.

Spreading connections over the workers: every worker polls the one listening socket gunicorn
shares, and the one already awake wins every accept, so with keep-alive clients a single worker
kept every connection (under ``wrk -c8`` one ran at 113% CPU, the other at 0%). Each worker now
publishes its open connections in memory shared by all workers (``ConnectionBoard``, made by the
arbiter before it forks them); a worker holding more than another live worker leaves a waiting
connection in the queue for it, for at most ``DEFER_LIMIT_SECONDS``, then takes it anyway (the
other may be busy or stuck). A worker holding two or more connections than another (they were
made while the other was booting, or before it was recycled) answers one request with
``Connection: close``, so that its client reconnects to the other. The queue stays the one shared
socket, so a worker that stops or is recycled never drops a connection waiting in it.

Chosen in ``gunicorn.conf.py`` (``RISK_API_WORKER_CLASS``); TLS served by gunicorn itself falls
back to the plain gthread behaviour (terminate TLS in a reverse proxy instead, as the README says).
"""

from __future__ import annotations

import errno
import io
import mmap
import os
import selectors
import socket
import threading
import time
from functools import partial
from typing import Any

from gunicorn.workers.gthread import TConn, ThreadWorker

# Environ key the app sets when it answered without reading the whole body (a refused one):
# the connection is then closed rather than kept alive, so that no thread waits for the rest.
CLOSE_CONNECTION_KEY = "risk_api.close_connection"
READ_TIMEOUT_ENV = "RISK_API_READ_TIMEOUT"
DEFAULT_READ_TIMEOUT_SECONDS = 60.0
HEADER_ALLOWANCE = 64 * 1024  # request line and headers: gunicorn's own limits are far below this
RECV_SIZE = 64 * 1024
DEFAULT_BODY_LIMIT = 16 * 1024 * 1024
TIMEOUT_ANSWER = b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
CONTINUE_ANSWER = b"HTTP/1.1 100 Continue\r\n\r\n"
# Workers alive at once stay far below this (a slot is the worker's age modulo it; two workers
# 64 ages apart alive together would share one, which blurs the balance and nothing else).
BOARD_SLOTS = 64
STALE_AFTER_NS = 3_000_000_000  # a live worker's loop turns at least every second (gthread polls for 1 s)
DEFER_PAUSE_SECONDS = 0.0005  # the GIL is released meanwhile: this worker's threads go on
DEFER_LIMIT_SECONDS = 0.02
BALANCE_CHECK_SECONDS = 0.05  # reading the board costs ~5-15 us: not on every request


class BufferedSocket:
    """A client socket whose bytes already received by the event loop are read first."""

    def __init__(self, sock: socket.socket):
        self._sock = sock
        self.pending = bytearray()

    def recv(self, size: int, *flags: int) -> bytes:
        if self.pending:
            data = bytes(self.pending[:size])
            del self.pending[:size]
            return data
        return self._sock.recv(size, *flags)

    def __getattr__(self, name: str) -> Any:  # fileno, sendall, setblocking, close ...
        return getattr(self._sock, name)


class RequestReader:
    """Tells, as bytes arrive, whether one whole HTTP request (headers and body) is in hand."""

    def __init__(self, cap: int):
        self.cap = cap
        self.data = bytearray()
        self.body_start: int | None = None
        self.content_length: int | None = None
        self.chunked = False
        self.chunk_pos = 0  # where the next chunk-size line starts
        self._expects_continue = False
        self.continue_sent = False

    def feed(self, data: bytes) -> None:
        self.data += data

    def complete(self) -> bool:
        if len(self.data) > self.cap:
            return True  # larger than the app accepts: the app refuses it without reading on
        if self.body_start is None and not self._parse_head():
            return len(self.data) > HEADER_ALLOWANCE  # gunicorn refuses oversized headers itself
        if self.chunked:
            return self._chunks_complete()
        if self.content_length is None:
            return True
        return self.content_length > self.cap or len(self.data) - self.body_start >= self.content_length

    def wants_continue(self) -> bool:
        """True once, when the client waits for "100 Continue" before sending its body."""
        return self.body_start is not None and self._expects_continue and not self.continue_sent

    def _parse_head(self) -> bool:
        end = self.data.find(b"\r\n\r\n")
        if end < 0:
            return False
        head = bytes(self.data[:end]).decode("latin-1")
        self.body_start = self.chunk_pos = end + 4
        self._expects_continue = False
        for line in head.split("\r\n")[1:]:
            name, _, value = line.partition(":")
            name, value = name.strip().lower(), value.strip().lower()
            if name == "transfer-encoding" and "chunked" in value:
                self.chunked = True
            elif name == "content-length":
                self.content_length = int(value) if value.isdigit() else None
            elif name == "expect" and value == "100-continue":
                self._expects_continue = True
        return True

    def drop_expect_header(self) -> None:
        """Once this worker has said "100 Continue", gunicorn must not say it again."""
        head_end = self.body_start - 2
        head = bytes(self.data[:head_end])
        lines = [
            line
            for line in head.split(b"\r\n")
            if not line.lower().replace(b" ", b"").startswith(b"expect:100-continue")
        ]
        new_head = b"\r\n".join(lines)
        self.data[:head_end] = new_head
        shift = head_end - len(new_head)
        self.body_start -= shift
        self.chunk_pos -= shift

    def _chunks_complete(self) -> bool:
        data = self.data
        while True:
            line_end = data.find(b"\r\n", self.chunk_pos)
            if line_end < 0:
                return False
            size_text = bytes(data[self.chunk_pos : line_end]).split(b";")[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                return True  # malformed: gunicorn's parser refuses it
            if size == 0:  # the last chunk, then optional trailers and an empty line
                return data.find(b"\r\n\r\n", line_end) >= 0 or data[line_end : line_end + 4] == b"\r\n\r\n"
            following = line_end + 2 + size + 2
            if following > len(data):
                return False
            self.chunk_pos = following


class ConnectionBoard:
    """Each worker's open connections, in an anonymous shared mapping inherited through fork.

    One slot per worker (its age modulo BOARD_SLOTS): pid, open connections, and when it last
    wrote (CLOCK_MONOTONIC, the same in every process). A slot not written for STALE_AFTER_NS
    belongs to a worker that has gone or hangs, and is ignored. Aligned 8-byte writes: a reader
    never sees a torn value, and a value a moment old only makes the balance a moment late.
    """

    def __init__(self, slots: int = BOARD_SLOTS):
        self.slots = slots
        self._memory = mmap.mmap(-1, slots * 3 * 8)  # MAP_SHARED | MAP_ANONYMOUS
        self._values = memoryview(self._memory).cast("q")

    def publish(self, slot: int, connections: int) -> None:
        base = (slot % self.slots) * 3
        self._values[base] = os.getpid()
        self._values[base + 1] = connections
        self._values[base + 2] = time.monotonic_ns()

    def leave(self, slot: int) -> None:
        self._values[(slot % self.slots) * 3] = 0

    def fewest_elsewhere(self, slot: int) -> int | None:
        """The fewest open connections held by another live worker; None where there is none."""
        own, now, values = (slot % self.slots) * 3, time.monotonic_ns(), self._values.tolist()
        fewest = None
        for base in range(0, len(values), 3):
            if values[base] and base != own and now - values[base + 2] < STALE_AFTER_NS:
                count = values[base + 1]
                fewest = count if fewest is None or count < fewest else fewest
        return fewest


class BufferingThreadWorker(ThreadWorker):
    """gthread, except that a connection reaches a thread only with a whole request to handle."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.read_timeout = float(os.environ.get(READ_TIMEOUT_ENV) or DEFAULT_READ_TIMEOUT_SECONDS)
        self.request_cap = body_limit() + HEADER_ALLOWANCE
        self._reading: dict[TConn, tuple[RequestReader, float]] = {}
        self._local = threading.local()
        self._deferring_since: float | None = None
        self._next_balance_check = 0.0

    board: ConnectionBoard | None = None  # made in the arbiter (check_config), inherited by every worker

    @classmethod
    def check_config(cls, cfg: Any, log: Any) -> None:
        """Runs in the arbiter before it forks any worker: the shared board is made here."""
        super().check_config(cfg, log)
        if cls.board is None:
            cls.board = ConnectionBoard()

    def run(self) -> None:
        try:
            super().run()
        finally:
            if self.board is not None:
                self.board.leave(self.age)

    # ------------------------------------------------------------------ spreading connections

    def _publish(self) -> None:
        if self.board is not None:
            self.board.publish(self.age, self.nr_conns)

    def _holds_too_many(self) -> bool:
        """True while this worker holds at least two connections more than another live worker.

        Connections made while another worker was still booting (or just after one was recycled)
        stay with the first; keep-alive clients never reconnect by themselves. One of them is
        closed after its answer, and its client's next connection is queued for the other worker.
        """
        now = time.monotonic()
        if self.board is None or now < self._next_balance_check:
            return False
        self._next_balance_check = now + BALANCE_CHECK_SECONDS  # threads may race here: harmless
        fewest = self.board.fewest_elsewhere(self.age)
        return fewest is not None and self.nr_conns > fewest + 1

    def _leave_for_another(self) -> bool:
        """True while another live worker holds fewer connections (for at most DEFER_LIMIT_SECONDS
        per waiting connection): the connection stays queued for it."""
        if self.board is None or not self.alive:
            return False
        self._publish()
        fewest = self.board.fewest_elsewhere(self.age)
        if fewest is None or fewest >= self.nr_conns:
            self._deferring_since = None
            return False
        now = time.monotonic()
        if self._deferring_since is None:
            self._deferring_since = now
        elif now - self._deferring_since > DEFER_LIMIT_SECONDS:
            self._deferring_since = None
            return False
        time.sleep(DEFER_PAUSE_SECONDS)  # the socket stays readable: the loop asks again after the pause
        return True

    # ------------------------------------------------------------------ the event loop side

    def accept(self, server: Any, listener: socket.socket) -> None:
        if self._leave_for_another():
            return
        if self.cfg.is_ssl:
            super().accept(server, listener)
            self._publish()
            return
        try:
            sock, client = listener.accept()
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        conn = TConn(self.cfg, BufferedSocket(sock), client, server)
        self.nr_conns += 1
        self._publish()
        self._start_reading(conn)  # the clock runs from the connection: one that sends nothing is closed too

    def on_client_socket_readable(self, conn: TConn, client: Any) -> None:
        """A kept-alive connection has its next request coming."""
        if not isinstance(conn.sock, BufferedSocket):
            return super().on_client_socket_readable(conn, client)
        with self._lock:
            self.poller.unregister(client)
            try:
                self._keep.remove(conn)  # no longer idle
            except ValueError:
                return  # closed by murder_keepalived meanwhile
        self._start_reading(conn, readable=True)

    def _start_reading(self, conn: TConn, readable: bool = False) -> None:
        reader = RequestReader(self.request_cap)
        reader.feed(bytes(conn.sock.pending))  # bytes of a pipelined request read with the last one
        conn.sock.pending.clear()
        self._reading[conn] = (reader, time.monotonic() + self.read_timeout)
        # A small request usually arrives whole: it goes to a thread without a trip through the poller.
        if readable and self._read(conn, reader) != "more":
            return
        with self._lock:
            self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_request_bytes, conn))

    def _on_request_bytes(self, conn: TConn, client: Any) -> None:
        if conn not in self._reading:
            return
        reader, _ = self._reading[conn]
        self._read(conn, reader, registered=True)

    def _read(self, conn: TConn, reader: RequestReader, registered: bool = False) -> str:
        """Take what has arrived; hand the connection to a thread once its request is whole.
        Says "more" while more is awaited, "done" once handed on or dropped."""
        try:
            data = conn.sock._sock.recv(RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return "more"
        except OSError:
            self._drop(conn, registered=registered)
            return "done"
        if not data:
            self._drop(conn, registered=registered)  # the client went away
            return "done"
        reader.feed(data)
        if reader.complete():
            if registered:
                with self._lock:
                    self.poller.unregister(conn.sock)
            del self._reading[conn]
            conn.sock.pending[:0] = reader.data
            self.enqueue_req(conn)
            return "done"
        if reader.wants_continue():
            reader.continue_sent = True
            reader.drop_expect_header()
            self._send_quietly(conn, CONTINUE_ANSWER)
        return "more"

    def _drop(self, conn: TConn, answer: bytes | None = None, registered: bool = True) -> None:
        self._reading.pop(conn, None)
        if registered:
            with self._lock:
                try:
                    self.poller.unregister(conn.sock)
                except (KeyError, ValueError, OSError):
                    pass
        if answer:
            self._send_quietly(conn, answer)
        self.nr_conns -= 1
        conn.close()

    @staticmethod
    def _send_quietly(conn: TConn, data: bytes) -> None:
        try:
            conn.sock._sock.send(data)  # a few bytes into an empty send buffer: never blocks
        except OSError:
            pass

    def murder_keepalived(self) -> None:
        """Runs once per turn of the event loop (at least every second)."""
        super().murder_keepalived()
        now = time.monotonic()
        for conn in [c for c, (_, deadline) in self._reading.items() if deadline < now]:
            self.log.info("closing a connection from %s: no whole request within %.0fs", conn.client, self.read_timeout)
            self._drop(conn, TIMEOUT_ANSWER)
        self._publish()  # connections closed since, and a sign of life

    # ------------------------------------------------------------------ the thread side

    def load_wsgi(self) -> None:
        super().load_wsgi()
        app, local = self.wsgi, self._local

        def marking_app(environ: dict[str, Any], start_response: Any) -> Any:
            result = app(environ, start_response)
            if environ.get(CLOSE_CONNECTION_KEY):
                local.close_connection = True
            return result

        self.wsgi = marking_app

    def handle_request(self, req: Any, conn: TConn) -> bool:
        self._local.close_connection = False
        if self._holds_too_many():
            req.must_close = True  # answered with "Connection: close"; the client's next connection goes elsewhere
            self.log.debug("closing the connection from %s after this answer: another worker holds fewer", conn.client)
        keep_alive = super().handle_request(req, conn) and not self._local.close_connection
        if keep_alive:
            try:  # what the app left of the body, in memory already: what follows is the next request
                while req.body.read(RECV_SIZE):
                    pass
            except Exception:  # a body gunicorn cannot read to its end: the connection cannot go on
                return False
        return keep_alive

    def finish_request(self, fs: Any) -> None:
        """A kept-alive connection whose next request is already in hand whole goes to a thread at
        once (pipelining); otherwise it waits for more bytes, as gthread's connections do."""
        if not fs.cancelled() and fs.exception() is None:
            keep_alive, conn = fs.result()
            if keep_alive and self.alive and isinstance(conn.sock, BufferedSocket) and self._next_request_whole(conn):
                self.enqueue_req(conn)
                return
        super().finish_request(fs)

    def _next_request_whole(self, conn: TConn) -> bool:
        """Put the bytes gunicorn's parser read past the last request back before the socket's
        (where the event loop reads them first); True when they hold the next request whole."""
        unreader = getattr(conn.parser, "unreader", None)
        buffered = unreader.buf.getvalue() if isinstance(getattr(unreader, "buf", None), io.BytesIO) else b""
        if buffered:
            unreader.buf = io.BytesIO()
            conn.sock.pending[:0] = buffered
        if not conn.sock.pending:
            return False
        reader = RequestReader(self.request_cap)
        reader.feed(bytes(conn.sock.pending))
        return reader.complete()


def body_limit() -> int:
    """api_max_body_bytes of the config being served (the default where it cannot be read)."""
    from risk.core.settings import ConfigError, load_config

    try:
        return load_config(os.environ.get("RISK_API_CONFIG") or None)["api_max_body_bytes"] or DEFAULT_BODY_LIMIT
    except ConfigError:
        return DEFAULT_BODY_LIMIT
