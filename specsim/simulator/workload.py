"""Load generation inside the simulation: open-loop arrivals, closed-loop clients, and the router."""

from __future__ import annotations

import simpy

from specsim.simulator.engine import ReplicaEngine
from specsim.simulator.state import RequestTable


class Router:
    """Spreads requests over replicas: round-robin, or to the replica with least outstanding work."""

    def __init__(self, engines: list[ReplicaEngine], table: RequestTable, policy: str) -> None:
        self.engines = engines
        self.table = table
        self.policy = policy
        self._next = 0

    def submit(self, i: int, now: float) -> None:
        if self.policy == "least_loaded":
            e = min(self.engines, key=lambda x: (x.load, x.index))
        else:
            e = self.engines[self._next % len(self.engines)]
            self._next += 1
        self.table.arrival[i] = now
        self.table.replica[i] = e.index
        e.submit(i)


def open_loop(env: simpy.Environment, times: list[float], router: Router):  # noqa: ANN201
    """Process: submit request i at times[i] (already rate-scaled, relative to the first)."""
    for i, at in enumerate(times):
        delay = at - env.now
        if delay > 0:
            yield env.timeout(delay)
        router.submit(i, env.now)


class ClosedLoop:
    """N clients, each sending the trace's next request when its previous one completes."""

    def __init__(self, env: simpy.Environment, n_requests: int, router: Router, clients: int, think: float):
        self.env = env
        self.n = n_requests
        self.router = router
        self.think = think
        self._next = 0
        self._done: dict[int, simpy.Event] = {}
        for _ in range(min(clients, n_requests)):
            env.process(self._client())

    def on_finish(self, i: int) -> None:
        ev = self._done.pop(i, None)
        if ev is not None:
            ev.succeed()

    def _client(self):  # noqa: ANN202
        env = self.env
        while self._next < self.n:
            i = self._next
            self._next += 1
            ev = self._done[i] = env.event()
            self.router.submit(i, env.now)
            yield ev
            if self.think > 0:
                yield env.timeout(self.think)
