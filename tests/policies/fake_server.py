"""A tiny in-process OpenAI-style streaming server on 127.0.0.1 for loadgen tests."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Any


class FakeServer:
    """Streams `max_tokens` tokens, `per_chunk` at a time, `itl` seconds apart, after `ttft` seconds."""

    def __init__(self, ttft: float = 0.05, itl: float = 0.01, per_chunk: int = 1, chunked: bool = True,
                 tokenize: bool = False, models_body: bytes | None = None, event_raw: str | None = None,
                 metrics_body: bytes | None = None) -> None:
        """`models_body`, `event_raw` (the data of every completion event) and `metrics_body` replace what a
        well-behaved server answers, for tests of malformed answers."""
        self.ttft, self.itl, self.per_chunk, self.chunked = ttft, itl, per_chunk, chunked
        self.tokenize = tokenize
        self.models_body, self.event_raw, self.metrics_body = models_body, event_raw, metrics_body
        self.received: list[tuple[float, dict[str, Any]]] = []
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> FakeServer:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._cancel_all(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _cancel_all(self) -> None:
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()
        server.close()
        self._loop.run_until_complete(server.wait_closed())
        self._loop.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request_line = (await reader.readline()).decode()
            method, path, _ = request_line.split(" ", 2)
            headers = {}
            while (line := await reader.readline()) not in (b"\r\n", b""):
                k, _, v = line.decode().partition(":")
                headers[k.strip().lower()] = v.strip()
            body = await reader.readexactly(int(headers.get("content-length", 0)))
            if path == "/v1/models":
                await self._send(writer, 200, self.models_body or json.dumps({"data": [{"id": "fake"}]}).encode())
            elif path == "/tokenize" and self.tokenize:
                req = json.loads(body)
                text = req["prompt"] if "prompt" in req else "<" + req["messages"][0]["content"] + ">"
                ids = [ord(c) for c in text]
                await self._send(writer, 200, json.dumps({"tokens": ids}).encode())
            elif path == "/metrics":
                await self._send(writer, 200, self.metrics_body or
                                 b"# HELP x\nvllm:spec_decode_num_drafts_total{a=\"b\"} 3.0\n")
            elif path == "/v1/completions" and method == "POST":
                req = json.loads(body)
                self.received.append((time.perf_counter(), req))
                await self._stream(writer, req)
            else:
                await self._send(writer, 404, b"not found")
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def _send(self, writer: asyncio.StreamWriter, status: int, data: bytes) -> None:
        writer.write(f"HTTP/1.1 {status} X\r\nContent-Length: {len(data)}\r\n\r\n".encode() + data)
        await writer.drain()

    async def _stream(self, writer: asyncio.StreamWriter, req: dict[str, Any]) -> None:
        head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
        head += "Transfer-Encoding: chunked\r\n\r\n" if self.chunked else "\r\n"
        writer.write(head.encode())

        async def emit(obj: Any) -> None:
            data = f"data: {obj if isinstance(obj, str) else json.dumps(obj)}\n\n".encode()
            writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n" if self.chunked else data)
            await writer.drain()

        n, done = int(req["max_tokens"]), 0
        await asyncio.sleep(self.ttft)
        if self.event_raw is not None:
            await emit(self.event_raw)
            await emit("[DONE]")
            if self.chunked:
                writer.write(b"0\r\n\r\n")
                await writer.drain()
            return
        while done < n:
            take = 1 if done == 0 else min(self.per_chunk, n - done)
            done += take
            await emit({"choices": [{"index": 0, "text": "x" * take}],
                        "usage": {"prompt_tokens": len(req["prompt"]), "completion_tokens": done}})
            if done < n:
                await asyncio.sleep(self.itl)
        await emit({"choices": [], "usage": {"completion_tokens": done}})
        await emit("[DONE]")
        if self.chunked:
            writer.write(b"0\r\n\r\n")
            await writer.drain()
