"""A shaping TCP proxy on loopback: a real-world link between real clients and a real broker.

Each direction has its own rate (Mbit/s), and both a one-way delay with jitter; an outage
either holds the connections open while nothing passes (``hold``: a Wi-Fi dead spot) or
drops them and refuses new ones (``refuse``: the link is down). Everything can change while
connections are open, so one run can move from a LAN to LTE to an outage.

How a chunk of bytes crosses: it waits for the direction's bottleneck to be free, takes
``8 * bytes / rate`` seconds on it (serialisation), then ``delay ± jitter`` in flight; bytes
leave in the order they came (TCP keeps order, so jitter never reorders). A ``hold`` outage
stops both the bottleneck and delivery; when it ends the queue drains at the link's rate.
A direction holds at most ``buffer_bytes`` undelivered, like a router's queue: past it the
proxy stops reading, and TCP's own flow control slows the sender, as on a real bottleneck.
The proxy stops by itself after ``lifetime_s``, so a bench that dies cannot leave it running.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
import threading
import time
from dataclasses import dataclass

__all__ = ["OUTAGES", "LinkProfile", "LinkShaper"]

OUTAGES = (None, "hold", "refuse")
_CHUNK = 16 * 1024  # bytes read at a time: small enough that rate limits are smooth


@dataclass(frozen=True)
class LinkProfile:
    """One state of the link. ``None`` rates are unlimited."""

    up_mbit: float | None = None  # client -> server (a node's uplink)
    down_mbit: float | None = None  # server -> client
    delay_ms: float = 0.0  # one way, each direction
    jitter_ms: float = 0.0  # uniform in [-jitter, +jitter], never below zero delay
    outage: str | None = None  # None, "hold" or "refuse"

    def __post_init__(self) -> None:
        for name in ("up_mbit", "down_mbit"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} should be > 0 Mbit/s or None (unlimited), got {value}")
        if self.delay_ms < 0 or self.jitter_ms < 0:
            raise ValueError("delay_ms and jitter_ms should be >= 0")
        if self.outage not in OUTAGES:
            raise ValueError(f"outage should be one of {OUTAGES}, got {self.outage!r}")


class _Direction:
    """The bottleneck of one direction, shared by every connection through the link: when it
    is next free, the last chunk's due time (order is kept), and the bytes delivered."""

    def __init__(self) -> None:
        self.free_at = 0.0
        self.last_due = 0.0
        self.bytes = 0


class LinkShaper:
    """Listens on a free loopback port and forwards to ``target_port``, shaped by a profile.

    Use as a context manager; :meth:`set` changes the profile at once for the bytes that
    arrive from then on.
    """

    def __init__(
        self,
        target_port: int,
        profile: LinkProfile | None = None,
        *,
        target_host: str = "127.0.0.1",
        buffer_bytes: int = 1 << 20,
        lifetime_s: float = 3600.0,
        seed: int = 0,
    ) -> None:
        self.target = (target_host, target_port)
        self.profile = profile or LinkProfile()
        self.buffer_bytes = buffer_bytes
        self.lifetime_s = lifetime_s
        self.port = 0
        self.up = _Direction()
        self.down = _Direction()
        self._random = random.Random(seed)
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._writers: set[asyncio.StreamWriter] = set()
        self._thread = threading.Thread(target=self._run, name="link-shaper", daemon=True)

    def __enter__(self) -> LinkShaper:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the link shaper did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def set(self, profile: LinkProfile | None = None, **changes: object) -> LinkProfile:
        """Switch to ``profile`` (or change some of its fields); a ``refuse`` outage drops the
        open connections at once."""
        new = dataclasses.replace(profile or self.profile, **changes)  # type: ignore[arg-type]
        self.profile = new
        if new.outage == "refuse" and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._drop_all)
        return new

    # -- the event loop ------------------------------------------------------------------------
    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._loop.call_later(self.lifetime_s, self._loop.stop)
        self._ready.set()
        self._loop.run_forever()
        server.close()
        self._drop_all()
        tasks = asyncio.all_tasks(self._loop)
        for task in tasks:
            task.cancel()
        self._loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        self._loop.close()

    def _drop_all(self) -> None:
        for writer in list(self._writers):
            transport = writer.transport
            if transport is not None:
                transport.abort()
        self._writers.clear()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.profile.outage == "refuse":
            writer.transport.abort()
            return
        try:
            up_r, up_w = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_w))
        try:
            await asyncio.gather(
                self._pipe(reader, up_w, self.up, "up_mbit"),
                self._pipe(up_r, writer, self.down, "down_mbit"),
            )
        finally:
            self._writers.discard(writer)
            self._writers.discard(up_w)

    async def _unless_held(self) -> None:
        while self.profile.outage == "hold":  # nothing passes; nothing is lost
            await asyncio.sleep(0.02)

    async def _serialise(self, direction: _Direction, size: int, rate_field: str) -> float:
        """Wait for this chunk's turn on the bottleneck and its time on it; its due time."""
        await self._unless_held()
        rate = getattr(self.profile, rate_field)
        start = max(time.monotonic(), direction.free_at)
        direction.free_at = start + (0.0 if rate is None else size * 8 / (rate * 1e6))
        if (wait := direction.free_at - time.monotonic()) > 0:
            await asyncio.sleep(wait)
        jitter = self._random.uniform(-self.profile.jitter_ms, self.profile.jitter_ms)
        flight = max(0.0, self.profile.delay_ms + jitter) / 1e3
        direction.last_due = max(time.monotonic() + flight, direction.last_due)
        return direction.last_due

    async def _pipe(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        direction: _Direction,
        rate_field: str,
    ) -> None:
        """Read, serialise on the bottleneck, fly, deliver: three stages, so a long delay
        never throttles the rate (bytes in flight do not wait for each other)."""
        arrived: asyncio.Queue[bytes] = asyncio.Queue()
        flying: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        held = [0]  # bytes of this connection's direction not yet delivered
        room = asyncio.Event()
        room.set()

        async def serialise() -> None:
            while data := await arrived.get():
                flying.put_nowait((await self._serialise(direction, len(data), rate_field), data))
            flying.put_nowait((0.0, b""))

        async def deliver() -> None:
            while True:
                due, data = await flying.get()
                if not data:
                    break
                if (wait := due - time.monotonic()) > 0:
                    await asyncio.sleep(wait)
                await self._unless_held()
                writer.write(data)
                await writer.drain()
                direction.bytes += len(data)
                held[0] -= len(data)
                if held[0] <= self.buffer_bytes:
                    room.set()
            writer.close()

        stages = [asyncio.ensure_future(serialise()), asyncio.ensure_future(deliver())]
        try:
            while data := await reader.read(_CHUNK):
                arrived.put_nowait(data)
                held[0] += len(data)
                if held[0] > self.buffer_bytes:  # a full queue: let TCP push back
                    room.clear()
                    await room.wait()
        except (ConnectionError, OSError):
            pass
        arrived.put_nowait(b"")
        with contextlib.suppress(ConnectionError, OSError):
            await asyncio.gather(*stages)
