"""A `specsim serve` server as a managed child process: start, wait until it answers, warm up, stop.

Used by `specsim verify` and the experiments. The server runs in its own process group and is
always stopped (SIGTERM, then SIGKILL of the whole group) when the `with` block ends, on errors
and on SIGTERM of the caller alike. Loopback only.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import TracebackType

from specsim.errors import SpecsimError


def free_port() -> int:
    """An unused loopback port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """`specsim serve POLICY [--profile P]` on a free loopback port."""

    def __init__(self, policy_path: Path, log: Path, profile_path: Path | None = None, model: str | None = None,
                 eager: bool = False, record_steps: Path | None = None, extra: list[str] | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "specsim", "serve", str(policy_path), "--port", str(self.port)]
        if profile_path is not None:
            cmd += ["--profile", str(profile_path)]
        if model:
            cmd += ["--model", model]
        if eager:  # an explicit choice: serve eagerly even where the profile was measured compiled
            cmd += ["--eager"] + (["--allow-mode-mismatch"] if profile_path is not None else [])
        if record_steps is not None:
            cmd += ["--record-steps", str(record_steps)]
        if extra:
            cmd += ["--", *extra]
        self.cmd = cmd
        self.log_path = log
        self._log = open(log, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
                                     env={**os.environ, **(env or {})})

    def wait_up(self, limit: float = 900.0) -> float:
        """Block until /v1/models answers (returns the seconds it took); one-line error otherwise."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < limit:
            if self.proc.poll() is not None:
                tail = self.log_path.read_text(errors="replace").strip().splitlines()[-1:] or ["?"]
                raise SpecsimError(f"the server exited ({self.proc.returncode}) before answering: {tail[0][:200]} "
                                   f"(log: {self.log_path})")
            try:
                with urllib.request.urlopen(self.url + "/v1/models", timeout=2) as r:
                    if r.status == 200:
                        return time.monotonic() - t0
            except OSError:
                pass
            time.sleep(1.0)
        raise SpecsimError(f"the server did not answer within {limit:.0f} s (log: {self.log_path})")

    def warm_up(self, requests: int = 2) -> None:
        """A few short completions: the first requests after start-up pay one-off costs."""
        warm_up(self.url, requests)

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(30)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self._log.close()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def warm_up(url: str, requests: int = 2, timeout: float = 300.0) -> None:
    """A few short completions against a server at `url`: the first requests after start-up pay
    one-off costs (compilation, allocation) that a measurement must not see."""
    import asyncio

    from specsim.policies.loadgen import Endpoint, fetch, server_model

    async def go() -> None:
        ep = Endpoint.parse(url)
        model = await server_model(ep)
        for _ in range(requests):
            await fetch(ep, "POST", "/v1/completions",
                        {"model": model, "prompt": "Hello, how are you today?", "max_tokens": 16,
                         "temperature": 0.0}, timeout=timeout)

    asyncio.run(go())
