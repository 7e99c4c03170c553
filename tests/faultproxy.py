"""A fault-injecting TCP proxy for storage tests (asyncio, in a background thread).

    proxy = FaultProxy("127.0.0.1", s3_port); proxy.start()
    endpoint = proxy.url              # give this to the code under test
    proxy.cut("refuse")               # new connections refused, open ones reset
    proxy.cut("reset")                # connections accepted, then reset at once
    proxy.cut("stall")                # connections accepted, nothing forwarded
    proxy.cut_when(b"checkpoint_00000004/", "refuse", 6.0)   # when a request names it
    proxy.break_response(b"GET /bucket/key ", 1000)  # closed mid-body (a broken download)
    proxy.restore(); proxy.stop()

It listens on 127.0.0.1 only. ``bytes_up`` counts what clients sent (to cut mid-upload);
``requests`` holds the heads (request line and headers) of the HTTP requests it forwarded.
"""
from __future__ import annotations

import asyncio
import socket
import struct
import threading
import time
from typing import List, Optional, Set

#: what an HTTP request starts with (to log request heads)
_METHODS = (b"GET ", b"HEAD ", b"PUT ", b"POST ", b"DELETE ")


class FaultProxy:
    def __init__(self, target_host: str, target_port: int):
        self.target = (target_host, target_port)
        self.mode = "pass"
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.server: Optional[asyncio.base_events.Server] = None
        self.writers: Set[asyncio.StreamWriter] = set()
        self.port = 0
        self.connections = 0
        self.bytes_up = 0
        self.trigger: Optional[tuple] = None
        self.triggered = threading.Event()
        self.requests: List[bytes] = []
        self.response_break: Optional[tuple] = None
        self.broke = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _call(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def start(self) -> "FaultProxy":
        self.thread.start()
        self._call(self._listen())
        return self

    async def _listen(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        self.port = sock.getsockname()[1]
        self.server = await asyncio.start_server(self._handle, sock=sock)

    async def _close_listener(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None

    @staticmethod
    def _reset(writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        if sock is not None:  # RST, not FIN: what a dropped connection looks like
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
        writer.transport.abort()

    async def _reset_all(self) -> None:
        for w in list(self.writers):
            self._reset(w)
        self.writers.clear()

    def cut(self, mode: str = "refuse") -> None:
        assert mode in ("refuse", "reset", "stall")
        self.mode = mode
        if mode == "refuse":
            self._call(self._close_listener())
        self._call(self._reset_all())

    def cut_when(self, pattern: bytes, mode: str, length_s: float) -> None:
        """Cut (``mode``) for ``length_s`` when a client first sends ``pattern``."""
        self.trigger = (pattern, mode, length_s)

    def break_response(self, pattern: bytes, after: int, how: str = "close") -> None:
        """Once: the response to the first request whose head contains ``pattern`` is
        forwarded up to ``after`` bytes of its body (fewer than it has), then its connection
        breaks, as a download broken mid-stream; new connections pass. ``broke`` is set then.

        ``how``: "close" ends the connection (FIN) short of the announced length: the client
        reads every byte forwarded, then the stream breaks; "reset" (RST) aborts it, and the
        client's kernel drops what the client had not read yet (so it breaks earlier)."""
        assert how in ("close", "reset")
        self.response_break = (pattern, int(after), how)

    def _fire(self, mode: str, length_s: float) -> None:
        self.cut(mode)
        self.triggered.set()
        time.sleep(length_s)
        if self.loop.is_running():  # not stopped meanwhile
            self.restore()

    def restore(self) -> None:
        self.mode = "pass"
        if self.server is None:
            self._call(self._listen())

    def stop(self) -> None:
        self._call(self._close_listener())
        self._call(self._reset_all())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        if self.mode == "reset":
            self._reset(writer)
            return
        if self.mode == "stall":
            self.writers.add(writer)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            self._reset(writer)
            return
        self.writers.update((writer, up_writer))
        # break_response on this connection: body bytes still to forward (None: not armed)
        armed: dict = {"left": None, "head": b"", "how": "close"}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, upstream: bool) -> None:
            try:
                while True:
                    data = await src.read(65536)
                    if not data or self.mode != "pass":
                        break
                    if not upstream and armed["left"] is not None:
                        if await self._forward_then_break(data, dst, armed):
                            self._reset(up_writer)
                            break
                        continue
                    if upstream:
                        self.bytes_up += len(data)
                        if data.startswith(_METHODS):
                            head = data.split(b"\r\n\r\n", 1)[0]
                            self.requests.append(head)
                            if self.response_break is not None and self.response_break[0] in head:
                                _, armed["left"], armed["how"] = self.response_break
                                self.response_break = None  # once
                        if self.trigger is not None and self.trigger[0] in data:
                            _, mode, length_s = self.trigger
                            self.trigger = None  # once; cut() needs the loop: another thread
                            threading.Thread(target=self._fire, args=(mode, length_s), daemon=True).start()
                            break
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                if self.mode == "pass":
                    dst.close()
                else:
                    self._reset(dst)

        await asyncio.gather(pipe(reader, up_writer, True), pipe(up_reader, writer, False))
        self.writers.discard(writer)
        self.writers.discard(up_writer)

    async def _forward_then_break(self, data: bytes, dst: asyncio.StreamWriter, armed: dict) -> bool:
        """Forward the armed response's head and up to ``armed["left"]`` body bytes; when
        they are out, break ``dst`` (True)."""
        body = b""
        if armed["head"] is not None:  # still in the response head
            armed["head"] += data
            if b"\r\n\r\n" not in armed["head"]:
                dst.write(data)
                await dst.drain()
                return False
            _, body = armed["head"].split(b"\r\n\r\n", 1)
            dst.write(data[: len(data) - len(body)])
            armed["head"] = None
        else:
            body = data
        dst.write(body[: armed["left"]])
        armed["left"] -= min(len(body), armed["left"])
        await dst.drain()
        if armed["left"] > 0:
            return False
        if armed["how"] == "reset":
            self._reset(dst)
        else:
            dst.close()  # FIN after what was written
            await dst.wait_closed()
        self.broke.set()
        return True
