"""`specsim loadgen`: open-loop, real-time replay of a traffic trace against a loopback OpenAI server.

Each request is sent at its trace arrival time (never waiting for earlier ones), as a streaming
`/v1/completions` call whose prompt is exactly `input_length` token ids and whose output is forced
to `output_length` tokens (`ignore_eos`). Per-request TTFT, TPOT, ITL and end-to-end latency are
written in the simulator's CSV/JSON format. Stdlib asyncio HTTP only; loopback addresses only.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from specsim import runs
from specsim.errors import SpecsimError
from specsim.formats.traffic import Traffic

# Counters read from vLLM's /metrics before and after a run (summed over label sets).
SPEC_COUNTERS = {
    "vllm:spec_decode_num_drafts_total": "spec_drafts",
    "vllm:spec_decode_num_draft_tokens_total": "draft_tokens",
    "vllm:spec_decode_num_accepted_tokens_total": "accepted_tokens",
    "vllm:generation_tokens_total": "server_generation_tokens",
}
# The simulator's per-request columns (specsim.simulator.metrics.request_columns) a client can measure.
LOADGEN_FILES = runs.RUN_FILES
"""Every file `specsim loadgen --out` writes: one run's set."""
LoadgenResult = runs.MeasuredRun
"""A load generator's run (`specsim.runs.MeasuredRun`)."""
COLUMNS = ("replica", "arrival", "input_length", "output_length", "ttft", "tpot", "e2e",
           "mean_itl", "max_itl", "decode_steps")
SEED_TEXT = (
    "The quick brown fox jumps over the lazy dog. A journey of a thousand miles begins with a "
    "single step. To be or not to be, that is the question. "
)
FALLBACK_IDS = tuple(range(1000, 1064))
SETUP_TIMEOUT_S = 10.0
"""Longest a setup request (/v1/models, /tokenize, /metrics) may take, within the run's --timeout."""
AFTER_RUN_TIMEOUT_S = 3.0
"""Longest the /metrics read after the run may take (the counters are then left out)."""


@dataclass(frozen=True)
class Endpoint:
    """A loopback HTTP server address."""

    host: str
    port: int

    @classmethod
    def parse(cls, url: str) -> Endpoint:
        """Accept only http:// URLs on a loopback address."""
        try:
            parts = urlsplit(url)
        except ValueError as exc:  # e.g. an unclosed [ of an IPv6 address
            raise SpecsimError(f"cannot read URL {url!r}: {exc}") from None
        if parts.scheme != "http":
            raise SpecsimError(f"loadgen needs an http:// URL, got {url!r}")
        try:
            port = parts.port
        except ValueError:  # out of range, or not a number
            raise SpecsimError(f"bad port in URL {url!r}: give a number in 1..65535") from None
        if port == 0:
            raise SpecsimError(f"bad port in URL {url!r}: give a number in 1..65535")
        host = parts.hostname or ""
        if host != "localhost":
            try:
                ok = ipaddress.ip_address(host).is_loopback
            except ValueError:
                ok = False
            if not ok:
                raise SpecsimError(f"loadgen only talks to loopback servers (127.0.0.1, ::1, localhost), got {host!r}")
        if host == "localhost":
            host = "127.0.0.1"
        return cls(host, port or 80)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


class HttpError(Exception):
    """A non-2xx response or a malformed HTTP exchange."""


class MalformedAnswer(SpecsimError):
    """The server answered something no OpenAI-compatible server sends (non-finite or absurd numbers, JSON
    nested too deeply, an event or body past its size bound): the run stops with one line."""


MAX_BODY_BYTES = 64 << 20
"""Largest response body read whole (/v1/models, /tokenize, /metrics, an error body)."""
MAX_EVENT_BYTES = 4 << 20
"""Largest server-sent event of a streamed completion."""
MAX_TOKENS_REPORTED = 1 << 31
"""Largest completion_tokens count believed."""


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def parse_answer(data: bytes | str, what: str) -> Any:
    """JSON from the server; NaN/Infinity, nesting too deep and undecodable bytes are a MalformedAnswer."""
    try:
        return json.loads(data, parse_constant=_reject_constant)
    except RecursionError:
        raise MalformedAnswer(f"{what} returned JSON nested too deeply") from None
    except ValueError as exc:
        raise MalformedAnswer(f"{what} did not return JSON ({str(exc)[:80]}); is it an OpenAI server?") from None


async def _read_headers(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    status_line = await reader.readline()
    if not status_line:
        raise HttpError("connection closed before a response")
    parts = status_line.decode("latin-1").split(" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        raise HttpError(f"bad status line {status_line[:80]!r}")
    headers: dict[str, str] = {}
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        k, _, v = line.decode("latin-1").partition(":")
        headers[k.strip().lower()] = v.strip()
    return int(parts[1]), headers


async def _body_chunks(reader: asyncio.StreamReader, headers: dict[str, str]):  # noqa: ANN202 - async gen
    """Yield the response body as it arrives (chunked, sized or until close)."""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        while True:
            size_line = await reader.readline()
            if not size_line:
                return
            size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
            if not 0 <= size <= MAX_BODY_BYTES:
                raise MalformedAnswer(f"a chunk of {size} bytes is beyond the {MAX_BODY_BYTES} specsim reads")
            if size == 0:
                await reader.readline()
                return
            data = await reader.readexactly(size)
            await reader.readexactly(2)
            yield data
    elif "content-length" in headers:
        n = int(headers["content-length"])
        if not 0 <= n <= MAX_BODY_BYTES:
            raise MalformedAnswer(f"a body of {n} bytes is beyond the {MAX_BODY_BYTES} specsim reads")
        if n:
            yield await reader.readexactly(n)
    else:
        while chunk := await reader.read(65536):
            yield chunk


async def http_request(ep: Endpoint, method: str, path: str, body: dict[str, Any] | None = None):  # noqa: ANN201
    """Open a request; returns (status, headers, reader, writer); the caller closes the writer."""
    reader, writer = await asyncio.open_connection(ep.host, ep.port)
    payload = json.dumps(body).encode() if body is not None else b""
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: {ep.host}:{ep.port}\r\nUser-Agent: specsim-loadgen\r\n"
        f"Accept: */*\r\nConnection: close\r\n"
    )
    if body is not None:
        head += f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
    writer.write(head.encode() + b"\r\n" + payload)
    await writer.drain()
    status, headers = await _read_headers(reader)
    return status, headers, reader, writer


async def fetch(ep: Endpoint, method: str, path: str, body: dict[str, Any] | None = None,
                timeout: float = 10.0) -> tuple[int, bytes]:
    """A whole (non-streaming) request: (status, body)."""

    async def go() -> tuple[int, bytes]:
        status, headers, reader, writer = await http_request(ep, method, path, body)
        parts: list[bytes] = []
        size = 0
        try:
            async for c in _body_chunks(reader, headers):
                size += len(c)
                if size > MAX_BODY_BYTES:
                    raise MalformedAnswer(f"{method} {path} answered more than {MAX_BODY_BYTES} bytes")
                parts.append(c)
        finally:
            writer.close()
        return status, b"".join(parts)

    return await asyncio.wait_for(go(), timeout)


@dataclass
class Outcome:
    """What one request measured (times in seconds since the run's start)."""

    sent: float = math.nan
    first_token: float = math.nan
    finish: float = math.nan
    tokens: int = 0
    chunk_times: list[float] = field(default_factory=list)
    chunk_tokens: list[int] = field(default_factory=list)
    error: str | None = None


async def stream_completion(ep: Endpoint, body: dict[str, Any], t0: float, out: Outcome) -> None:
    """Send one streaming completion and timestamp every server-sent event that carries tokens."""
    status, headers, reader, writer = await http_request(ep, "POST", "/v1/completions", body)
    try:
        if status // 100 != 2:
            data = b"".join([c async for c in _body_chunks(reader, headers)])
            raise HttpError(f"HTTP {status}: {data[:200].decode('utf-8', 'replace')}")
        buf = b""
        done = False
        async for chunk in _body_chunks(reader, headers):
            now = time.perf_counter() - t0
            buf += chunk.replace(b"\r\n", b"\n")
            if len(buf) > MAX_EVENT_BYTES and b"\n\n" not in buf:
                raise MalformedAnswer(f"a streamed event is longer than {MAX_EVENT_BYTES} bytes")
            while b"\n\n" in buf and not done:
                event, buf = buf.split(b"\n\n", 1)
                for line in event.split(b"\n"):
                    if not line.startswith(b"data:"):
                        continue
                    data = line[5:].strip()
                    if data == b"[DONE]":
                        done = True
                        break
                    msg = parse_answer(data, "a streamed completion")
                    if not isinstance(msg, dict):
                        raise MalformedAnswer("a streamed completion event is not a JSON object")
                    _count_event(msg, now, out)
            if done:
                break
    finally:
        writer.close()


def _count_event(msg: dict[str, Any], now: float, out: Outcome) -> None:
    if "error" in msg and not msg.get("choices"):
        raise HttpError(f"server error: {str(msg['error'])[:200]}")
    usage = msg.get("usage") or {}
    total = usage.get("completion_tokens") if isinstance(usage, dict) else None
    choices = msg.get("choices") or []
    if not isinstance(choices, list) or (choices and not isinstance(choices[0], dict)):
        raise MalformedAnswer("a streamed completion event has choices that are not a list of objects")
    if total is not None:
        if isinstance(total, bool) or not isinstance(total, (int, float)) or not 0 <= total <= MAX_TOKENS_REPORTED \
                or total != int(total):
            raise MalformedAnswer(f"usage.completion_tokens {str(total)[:40]} is not a token count")
        new = int(total) - out.tokens
    else:  # no continuous usage stats: one token per event with text
        new = 1 if choices and (choices[0].get("text") or "") != "" else 0
    if new <= 0 or not choices:
        return
    out.tokens += new
    if not out.chunk_times:
        out.first_token = now
    out.chunk_times.append(now)
    out.chunk_tokens.append(new)


def prompt_ids(seed: list[int], n: int, offset: int) -> list[int]:
    """Exactly n token ids: the seed sequence repeated, starting at `offset` (varies prompts)."""
    m = len(seed)
    return [seed[(offset + j) % m] for j in range(n)]


async def tokenize(ep: Endpoint, model: str, text: str, chat: bool = False,
                   timeout: float = 10.0) -> list[int] | None:
    """Token ids of `text` (as a one-turn chat with `chat`) from vLLM's /tokenize (None if it has none).
    A server that does not answer at all within `timeout` is a NoAnswer error."""
    body: dict[str, Any] = {"model": model}
    if chat:
        body.update(messages=[{"role": "user", "content": text}], add_generation_prompt=True)
    else:
        body.update(prompt=text, add_special_tokens=False)
    try:
        status, data = await fetch(ep, "POST", "/tokenize", body, timeout=timeout)
    except TimeoutError:
        raise NoAnswer(f"the server at {ep.url} did not answer POST /tokenize within {timeout:g} s") from None
    except ConnectionRefusedError:
        raise SpecsimError(f"no server at {ep.url} (connection refused)") from None
    except (OSError, HttpError, asyncio.IncompleteReadError, ValueError):
        return None
    if status != 200:
        return None
    doc = parse_answer(data, "POST /tokenize")
    ids = doc.get("tokens") if isinstance(doc, dict) else None
    if not isinstance(ids, list) or not ids:
        return None
    if any(isinstance(x, bool) or not isinstance(x, int) or not 0 <= x < 1 << 32 for x in ids) or len(ids) > 1 << 24:
        raise MalformedAnswer("POST /tokenize answered token ids that are not 32-bit integers")
    return list(ids)


class NoAnswer(SpecsimError):
    """The server accepted the connection but sent nothing back in time."""


async def server_model(ep: Endpoint, timeout: float = 10.0) -> str:
    """The first model the server lists at /v1/models."""
    try:
        status, data = await fetch(ep, "GET", "/v1/models", timeout=timeout)
    except TimeoutError:
        raise NoAnswer(f"the server at {ep.url} accepted the connection but did not answer GET /v1/models "
                       f"within {timeout:g} s") from None
    except ConnectionRefusedError:
        raise SpecsimError(f"no server at {ep.url} (connection refused)") from None
    except OSError as exc:
        raise SpecsimError(f"no server at {ep.url} ({exc.strerror or type(exc).__name__})") from None
    except (HttpError, asyncio.IncompleteReadError, ValueError) as exc:
        raise SpecsimError(f"{ep.url} did not answer GET /v1/models as an HTTP server would "
                           f"({type(exc).__name__}: {exc})") from None
    if status != 200:
        raise SpecsimError(f"GET /v1/models returned HTTP {status}")
    try:
        doc = parse_answer(data, f"GET /v1/models at {ep.url}")
        models = doc.get("data") or []
        name = models[0]["id"]
        if not isinstance(name, str) or not 0 < len(name) <= 4096:
            raise TypeError
        return name
    except IndexError:
        raise SpecsimError("the server lists no models") from None
    except (AttributeError, KeyError, TypeError):
        raise SpecsimError(f"GET /v1/models at {ep.url} returned JSON without a model list (data[0].id)"
                           ) from None


async def scrape_metrics(ep: Endpoint, timeout: float = 10.0) -> dict[str, float] | None:
    """Speculative-decoding counters from /metrics (None if the server has no such endpoint)."""
    try:
        status, data = await fetch(ep, "GET", "/metrics", timeout=timeout)
    except (TimeoutError, OSError, HttpError, asyncio.IncompleteReadError, ValueError):
        return None
    if status != 200:
        return None
    return parse_metrics(data.decode("utf-8", "replace"))


MAX_COUNTER = 1e18
"""Largest counter value believed (a server counts tokens; more than 10^18 is no count)."""


def parse_metrics(text: str) -> dict[str, float]:
    """Sum each counter of SPEC_COUNTERS over its label sets in Prometheus text format; a counter that is
    not a finite count (nan, inf, negative, absurd) is a MalformedAnswer."""
    out = {v: 0.0 for v in SPEC_COUNTERS.values()}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name = line.split("{", 1)[0].split(" ", 1)[0]
        key = SPEC_COUNTERS.get(name)
        if key is not None:
            try:
                value = float(line.rsplit(" ", 1)[1])
            except (IndexError, ValueError):
                continue
            if not (math.isfinite(value) and 0 <= value <= MAX_COUNTER):
                raise MalformedAnswer(f"GET /metrics: counter {name} is {line.rsplit(' ', 1)[1][:30]}, not a count")
            out[key] += value
    return out


@dataclass
class LoadgenConfig:
    """How to replay: bounds, sampling and prompt content."""

    max_requests: int | None = None
    timeout: float = 600.0
    """Wall-clock bound for the whole run, seconds, setup included; unfinished requests count as
    failed, and a server that answers nothing within it is an error."""
    model: str | None = None
    seed_text: str = SEED_TEXT
    prompts: list[tuple[str | None, str]] = field(default_factory=list)
    """(category, text) prompts to draw content from (by request category); empty = the seed text."""
    prompts_by_id: dict[str, str] = field(default_factory=dict)
    """Prompt texts by id: a request whose trace names a `prompt_id` found here sends that text."""
    chat: bool = False
    """Format prompts with the model's chat template (as the profiler does)."""
    max_inflight: int = 512
    concurrency: int | None = None
    """Closed loop: this many clients, each sending the trace's next request as soon as its previous
    one completes (plus `think_time`); timestamps are then ignored and a request's arrival is when
    it was sent. None = open loop at the trace's timestamps. Same rule as the simulator's
    `SimConfig.concurrency` (`specsim.simulator.workload.ClosedLoop`)."""
    think_time: float = 0.0
    """Closed loop: seconds a client waits between a completion and its next request."""
    slo_ttft: float | None = None
    slo_tpot: float | None = None
    extra_body: dict[str, Any] = field(default_factory=dict)


def columns(traffic: Traffic, outcomes: list[Outcome],
            arrival: np.ndarray | None = None) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Per-request columns (seconds, relative to each request's arrival: the trace's scheduled time,
    or `arrival` where given, as in the closed loop) and all ITL gaps."""
    if arrival is None:
        arrival = traffic.timestamps - (traffic.timestamps[0] if len(traffic) else 0.0)
    n = len(outcomes)
    ttft, tpot, e2e, mean_itl, max_itl = (np.full(n, np.nan) for _ in range(5))
    steps = np.zeros(n, dtype=np.int64)
    out_len = np.zeros(n, dtype=np.int64)
    gaps: list[np.ndarray] = []
    for i, o in enumerate(outcomes):
        out_len[i] = o.tokens
        if o.error is not None or not o.chunk_times:
            continue
        ttft[i] = o.first_token - arrival[i]
        e2e[i] = o.finish - arrival[i]
        if o.tokens > 1:
            tpot[i] = (o.chunk_times[-1] - o.first_token) / (o.tokens - 1)
        g = np.diff(np.asarray(o.chunk_times))
        steps[i] = len(g)
        if len(g):
            mean_itl[i] = float(g.mean())
            max_itl[i] = float(g.max())
            gaps.append(g)
    cols = {
        "replica": np.zeros(n, dtype=np.int64),
        "arrival": arrival.astype(np.float64),
        "input_length": traffic.input_lengths.astype(np.int64),
        "output_length": out_len,
        "ttft": ttft,
        "tpot": tpot,
        "e2e": e2e,
        "mean_itl": mean_itl,
        "max_itl": max_itl,
        "decode_steps": steps,
    }
    return cols, (np.concatenate(gaps) if gaps else np.zeros(0))


def summarise(cols: dict[str, np.ndarray], itl: np.ndarray, cfg: LoadgenConfig) -> dict[str, Any]:
    """Aggregate metrics with the simulator's key names, under the config's SLO (`specsim.runs.summarise`)."""
    return runs.summarise(cols, itl, cfg.slo_ttft, cfg.slo_tpot)


async def replay(url: str, traffic: Traffic, cfg: LoadgenConfig) -> LoadgenResult:
    """Replay the trace open-loop against `url`; bounded by cfg.max_requests and cfg.timeout."""
    ep = Endpoint.parse(url)
    check_config(cfg)
    if cfg.max_requests is not None:
        traffic = traffic.head(cfg.max_requests)
    if len(traffic) == 0:
        raise SpecsimError("the traffic trace has no requests")
    deadline = time.perf_counter() + cfg.timeout

    def left(cap: float = SETUP_TIMEOUT_S) -> float:
        """Seconds a setup call may take: at most `cap`, never past the run's bound."""
        remaining = deadline - time.perf_counter()
        if remaining <= 0:
            raise NoAnswer(f"the server at {ep.url} did not finish answering setup requests within the "
                           f"--timeout of {cfg.timeout:g} s")
        return min(cap, remaining)

    model = cfg.model or await server_model(ep, left())
    seed = await tokenize(ep, model, cfg.seed_text, timeout=left()) or list(FALLBACK_IDS)
    contents = await _prompt_contents(ep, model, traffic, cfg.prompts, cfg.chat, cfg.prompts_by_id, left)
    before = await scrape_metrics(ep, left())
    rel = traffic.timestamps - traffic.timestamps[0]
    outcomes = [Outcome() for _ in range(len(traffic))]
    gate = asyncio.Semaphore(cfg.max_inflight)
    lags: list[float] = []
    malformed: list[str] = []
    t0 = time.perf_counter()

    closed = cfg.concurrency is not None
    if closed:
        rel = np.full(len(traffic), np.nan)  # filled with each request's send time

    async def one(i: int) -> None:
        o = outcomes[i]
        if closed:
            rel[i] = time.perf_counter() - t0
        delay = rel[i] - (time.perf_counter() - t0)
        if delay > 0:
            await asyncio.sleep(delay)
        async with gate:
            o.sent = time.perf_counter() - t0
            lags.append(o.sent - rel[i])
            body = {
                "model": model,
                "prompt": prompt_ids(contents[i], int(traffic.input_lengths[i]), 0) if contents
                else prompt_ids(seed, int(traffic.input_lengths[i]), 7 * i),
                "max_tokens": int(traffic.output_lengths[i]),
                "min_tokens": int(traffic.output_lengths[i]),
                "ignore_eos": True,
                "temperature": 0.0,
                "stream": True,
                "stream_options": {"include_usage": True, "continuous_usage_stats": True},
                **cfg.extra_body,
            }
            try:
                await asyncio.wait_for(stream_completion(ep, body, t0, o), max(deadline - time.perf_counter(), 0.001))
                o.finish = time.perf_counter() - t0
                if o.tokens == 0:
                    o.error = "no tokens received"
            except TimeoutError:
                o.error = "timed out (run bound reached)"
            except MalformedAnswer as exc:  # no OpenAI server answers so: the run stops after it, in one line
                o.error = f"malformed answer: {exc}"[:300]
                malformed.append(str(exc))
            except (OSError, HttpError, asyncio.IncompleteReadError, ValueError, TypeError, AttributeError,
                    KeyError) as exc:  # an error answer fails this request, not the run
                o.error = f"{type(exc).__name__}: {exc}"[:300]

    next_i = 0

    async def client() -> None:
        nonlocal next_i
        while next_i < len(traffic):
            i = next_i
            next_i += 1
            await one(i)
            if cfg.think_time > 0:
                await asyncio.sleep(cfg.think_time)

    if closed:
        assert cfg.concurrency is not None
        tasks = [asyncio.create_task(client()) for _ in range(min(cfg.concurrency, len(traffic)))]
    else:
        tasks = [asyncio.create_task(one(i)) for i in range(len(traffic))]
    try:
        await asyncio.wait_for(asyncio.gather(*tasks), max(deadline - time.perf_counter(), 0.0) + 5.0)
    except TimeoutError:
        for t in tasks:
            t.cancel()
        for o in outcomes:
            if o.error is None and not math.isfinite(o.finish):
                o.error = "not sent before the run bound"
    wall = time.perf_counter() - t0
    if malformed:
        raise MalformedAnswer(f"the server at {ep.url} sent malformed answers to {len(malformed)} request(s), the "
                              f"first: {malformed[0]}")
    after = await scrape_metrics(ep, AFTER_RUN_TIMEOUT_S)
    if closed:  # never sent: count from the run's end so they read as failed, not as instant
        rel = np.where(np.isfinite(rel), rel, wall)
    cols, itl = columns(traffic, outcomes, rel if closed else None)
    summary = summarise(cols, itl, cfg)
    errors = [f"{traffic.request_ids[i]}: {o.error}" for i, o in enumerate(outcomes) if o.error]
    summary.update({
        "source": "measured",
        "url": url,
        "model": model,
        "wall_s": wall,
        "trace_duration_s": float(np.max(rel)),
        "mode": "closed" if closed else "open",
        "concurrency": cfg.concurrency,
        "send_lag_mean_s": float(np.mean(lags)) if lags else math.nan,
        "send_lag_max_s": float(np.max(lags)) if lags else math.nan,
        "errors": errors[:20],
    })
    if before is not None and after is not None:
        delta = {k: after[k] - before[k] for k in after}
        drafts, drafted, accepted = delta["spec_drafts"], delta["draft_tokens"], delta["accepted_tokens"]
        summary.update({
            "spec_drafts": int(drafts),
            "draft_tokens": int(drafted),
            "accepted_tokens": int(accepted),
            "acceptance_rate": accepted / drafted if drafted else 0.0,
            "mean_acceptance_length": 1.0 + accepted / drafts if drafts else 1.0,
        })
    return LoadgenResult(summary, cols, traffic.request_ids, traffic.categories, errors)


async def _prompt_contents(ep: Endpoint, model: str, traffic: Traffic,
                           prompts: list[tuple[str | None, str]], chat: bool = False,
                           by_id: dict[str, str] | None = None,
                           left: Callable[[], float] | None = None) -> list[list[int]]:
    """Token ids for each request, tokenized by the server: the text of the prompt the request names
    (`prompt_id` found in `by_id`), else a prompt of its category (round robin)."""
    by_id = by_id or {}
    if not prompts and not by_id:
        return []
    if not prompts:
        prompts = [(None, t) for t in by_id.values()]
    by_cat: dict[str | None, list[str]] = {}
    for cat, text in prompts:
        by_cat.setdefault(cat, []).append(text)
    every = [t for _, t in prompts]
    cache: dict[str, list[int]] = {}
    out: list[list[int]] = []
    seen: dict[str | None, int] = {}
    pids = traffic.prompt_ids or (None,) * len(traffic)
    for cat, pid in zip(traffic.categories, pids, strict=True):
        if pid is not None and pid in by_id:
            text = by_id[pid]
        else:
            pool = by_cat.get(cat) or every
            j = seen.get(cat, 0)
            seen[cat] = j + 1
            text = pool[j % len(pool)]
        if text not in cache:
            ids = await tokenize(ep, model, text, chat, timeout=left() if left is not None else 10.0)
            if not ids:
                raise SpecsimError("the server has no working /tokenize endpoint; cannot use --prompts")
            cache[text] = ids
        out.append(cache[text])
    return out


def check_config(cfg: LoadgenConfig) -> None:
    """One-line errors for bounds that make no sense."""
    if not (cfg.timeout > 0 and math.isfinite(cfg.timeout)):
        raise SpecsimError(f"--timeout must be a finite number of seconds > 0, got {cfg.timeout}")
    if cfg.max_requests is not None and cfg.max_requests < 1:
        raise SpecsimError(f"--max-requests must be >= 1, got {cfg.max_requests}")
    if cfg.concurrency is not None and not 1 <= cfg.concurrency <= 1 << 20:
        raise SpecsimError(f"--concurrency must lie in 1..{1 << 20}, got {cfg.concurrency}")
    if not (0.0 <= cfg.think_time <= 1e6):
        raise SpecsimError(f"--think-time must be a number of seconds in [0, 1e6], got {cfg.think_time}")
    for name, v in (("ttft", cfg.slo_ttft), ("tpot", cfg.slo_tpot)):
        if v is not None and not (v > 0 and math.isfinite(v)):
            raise SpecsimError(f"the {name} SLO must be a finite number of seconds > 0, got {v}")


def run_loadgen(url: str, traffic: Traffic, cfg: LoadgenConfig) -> LoadgenResult:
    """Synchronous wrapper around `replay`."""
    Endpoint.parse(url)
    check_config(cfg)
    return asyncio.run(replay(url, traffic, cfg))
