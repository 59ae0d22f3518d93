"""Acceptance replay: which trace each request follows, and the traces as flat arrays.

All traces of one drafter live in one flat array, so the compiled engine reads a request's value at
output position pos as `flat[start + pos % length]`:
- greedy traces: `r` (accepted run length, exact for any K: min(K, r[pos])) and, for drafters that
  propose fewer tokens where they find nothing, `drafted` (min(K, drafted[pos]) draft tokens);
- sampled traces: a probability per draft token. Traces that record `pj[pos][j]` (the probability
  that the j-th token of the draft proposed at pos is accepted, given the earlier ones were) are
  replayed exactly; older traces with one `p[pos]` per position use p[pos + j] for the j-th token,
  an approximation the simulator names in its summary.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping

import numpy as np

import specsim.simulator.kernel as kernel
from specsim.errors import SpecsimError
from specsim.formats.profile import AcceptanceTrace, Profile
from specsim.formats.traffic import Traffic

MODE_GREEDY = 1
MODE_SAMPLED = 2
MODE_SAMPLED_LEGACY = 3


def check_category_map(profile: Profile, category_map: dict[str, tuple[str, ...]] | None) -> None:
    """Refuse a category map naming a target category none of the profile's acceptance traces has."""
    if not category_map:
        return
    known = sorted({t.category for t in profile.acceptance if t.category is not None})
    unknown = sorted({c for targets in category_map.values() for c in targets} - set(known))
    if unknown:
        raise SpecsimError(f"--category-map names categories the profile has no acceptance traces for: "
                           f"{', '.join(unknown)} (the profile's categories: {', '.join(known) or 'none'})")


def unmatched_categories(profile: Profile, categories: tuple[str | None, ...],
                         prompt_ids: tuple[str | None, ...] | None = None,
                         category_map: dict[str, tuple[str, ...]] | None = None) -> dict[str, int]:
    """Requests per trace category that would draw their acceptance trace from every category: no prompt
    id the profile recorded, a category none of its traces has, and no category map entry to one."""
    known = {t.category for t in profile.acceptance}
    prompts = {t.prompt_id for t in profile.acceptance}
    out: dict[str, int] = {}
    for i, cat in enumerate(categories):
        if cat is None or cat in known or (prompt_ids is not None and prompt_ids[i] in prompts):
            continue
        if category_map and any(c in known for c in category_map.get(cat, ())):
            continue
        out[cat] = out.get(cat, 0) + 1
    return out


def matching_warning(drawn: dict[str, int], profile_categories: list[str]) -> str | None:
    """One line naming the trace categories whose requests drew acceptance traces from every category
    (they matched none of the profile's), with the fix; None when there are none, or when the profile's
    traces carry no category (drawing from all of them is then the only choice)."""
    if not drawn or not profile_categories:
        return None
    order = sorted(drawn, key=lambda c: (-drawn[c], c))
    cats = ", ".join(f"{c} ({drawn[c]:,})" for c in order)
    known = ", ".join(profile_categories) or "none"
    return (f"warning: {sum(drawn.values()):,} requests drew acceptance traces from every category because their "
            f"category matched none of the profile's: {cats}; map them with --category-map {order[0]}=CATEGORY[+...] "
            f"(profile categories: {known})")


def traffic_warning(profile: Profile, traffic: Traffic,
                    category_map: dict[str, tuple[str, ...]] | None = None) -> str | None:
    """`matching_warning` for a trace about to be simulated on `profile` (tune, sweep)."""
    if not profile.acceptance:
        return None
    drawn = unmatched_categories(profile, traffic.categories, getattr(traffic, "prompt_ids", None), category_map)
    return matching_warning(drawn, sorted({t.category for t in profile.acceptance if t.category is not None}))


def summary_warning(summary: Mapping[str, object]) -> str | None:
    """`matching_warning` from a simulation summary's `acceptance_matching`."""
    m = summary.get("acceptance_matching")
    if not isinstance(m, dict):
        return None
    return matching_warning(dict(m.get("drawn_categories") or {}), list(m.get("profile_categories") or []))


class AcceptanceReplay:
    """Assigns a trace to each request; `arrays` holds the traces for the compiled engine."""

    def __init__(self, traces: list[AcceptanceTrace], seed: int = 0, tree_sizes: list[int] | None = None) -> None:
        """`tree_sizes`: the K levels the traces come in, ascending (a tree's sizes, or the K values of traces
        given per K, `AcceptanceTrace.at_k`); a K-token draft reads the largest level no bigger than K."""
        if not traces:
            raise SpecsimError("the profile has no acceptance traces for the policy's drafter")
        extra: dict[int, list[AcceptanceTrace]] = {}
        if tree_sizes and len(tree_sizes) > 1:
            # NOTE: one drafter, one trace per prompt and level; requests are assigned among the largest
            # level's traces and every level reads the same prompt's positions (rows of `r`)
            top = tree_sizes[-1]
            by_size: dict[int, list[AcceptanceTrace]] = defaultdict(list)
            for t in traces:
                by_size[t.tree_size or t.at_k or top].append(t)
            traces = by_size.pop(top, [])
            what = "K" if any(t.at_k for t in traces) else "tree size"
            if set(by_size) - set(tree_sizes) or not traces:
                raise SpecsimError(f"the traces are for {what} {sorted({*by_size, top})}, the drafter lists "
                                   f"{tree_sizes}")
            for size in tree_sizes[:-1]:
                other = by_size.get(size, [])
                if [(t.prompt_id, len(t.r or ())) for t in other] != [(t.prompt_id, len(t.r or ())) for t in traces]:
                    raise SpecsimError(f"the traces for {what} {size} must cover the same prompts and positions "
                                       f"as those for {what} {top}")
                extra[size] = other
        modes = {t.mode for t in traces}
        if len(modes) > 1:
            raise SpecsimError("a drafter's acceptance traces mix greedy and sampled modes")
        self.sampled = modes == {"sampled"}
        self.k_cap = min(t.k_max for t in traces)
        self.lengths = np.array([len((t.p if self.sampled else t.r) or ()) for t in traces], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.lengths)[:-1]]).astype(np.int64)
        total = int(self.lengths.sum())
        self.has_drafted = any(t.drafted is not None for t in traces)
        drafted = np.concatenate([
            np.asarray(t.drafted if t.drafted is not None else [t.k_max] * int(n), dtype=np.int16)
            for t, n in zip(traces, self.lengths, strict=True)
        ]) if self.has_drafted else np.zeros(1, dtype=np.int16)
        if self.sampled:
            per_token = all(t.pj is not None for t in traces)
            self.mode = MODE_SAMPLED if per_token else MODE_SAMPLED_LEGACY
            width = self.k_cap if per_token else 1
            p = np.zeros((total, max(width, 1)))
            for t, off, n in zip(traces, self.offsets, self.lengths, strict=True):
                if per_token:
                    for pos, row in enumerate(t.pj or ()):
                        m = min(len(row), width)
                        p[off + pos, :m] = row[:m]
                else:
                    p[off:off + n, 0] = t.p
            r = np.zeros((1, 1), dtype=np.int16)
        else:
            self.mode = MODE_GREEDY
            rows = [np.concatenate([np.asarray(t.r, dtype=np.int16) for t in traces])]
            sizes = sorted(extra)
            rows = [np.concatenate([np.asarray(t.r, dtype=np.int16) for t in extra[z]]) for z in sizes] + rows
            r = np.stack(rows)
            p = np.zeros((1, 1))
        krow = np.zeros(max(self.k_cap, *(tree_sizes or [0])) + 1, dtype=np.int64)
        if extra and tree_sizes:
            for level, tsize in enumerate(tree_sizes):
                krow[tsize:] = level  # a draft of K tokens reads the largest tree no bigger than K
        if self.sampled:
            r = np.zeros((1, 1), dtype=np.int16)
        self.arrays = kernel.Acc(r, drafted, p, krow)
        """The traces in the form the compiled engine reads."""
        self._by_category: dict[str | None, list[int]] = defaultdict(list)
        self._by_prompt: dict[str, int] = {}
        for i, t in enumerate(traces):
            self._by_category[t.category].append(i)
            self._by_prompt.setdefault(t.prompt_id, i)
        self.prompt_matches = 0
        """Requests of the last `assign` that got their own prompt's trace."""
        self.category_matches = 0
        """Requests of the last `assign` that drew a trace of their own category."""
        self.map_matches = 0
        """Requests of the last `assign` that drew a trace of the categories their category is mapped to."""
        self.drawn: dict[str | None, int] = {}
        """Requests of the last `assign` that drew from all traces, per trace category (None: no category)."""
        self._rng = np.random.default_rng(seed)

    @property
    def categories(self) -> list[str]:
        """The categories of the traces (sorted)."""
        return sorted(c for c in self._by_category if c is not None)

    def assign(self, categories: tuple[str | None, ...],
               prompt_ids: tuple[str | None, ...] | None = None,
               category_map: dict[str, tuple[str, ...]] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Per request (trace start, trace length): the trace of its prompt if the request names one
        the profile recorded, else a seeded draw among its category's traces, else among the traces of
        the categories `category_map` maps its category to, else among all."""
        pick = np.empty(len(categories), dtype=np.int64)
        groups: dict[str | None, list[int]] = defaultdict(list)
        self.prompt_matches = 0
        self.category_matches = 0
        self.map_matches = 0
        self.drawn = {}
        for i, cat in enumerate(categories):
            pid = prompt_ids[i] if prompt_ids is not None else None
            own = self._by_prompt.get(pid) if pid else None
            if own is not None:
                pick[i] = own
                self.prompt_matches += 1
            else:
                groups[cat].append(i)
        all_idx = np.arange(len(self.lengths))
        for cat in sorted(groups, key=lambda c: (c is None, c or "")):  # fixed order: seeded draws
            rows = np.asarray(groups[cat], dtype=np.int64)
            pool = self._by_category.get(cat)
            if pool:
                self.category_matches += len(rows)
            elif cat is not None and category_map and cat in category_map:
                pool = sorted({j for c in category_map[cat] for j in self._by_category.get(c, ())})
                if pool:
                    self.map_matches += len(rows)
            if not pool:
                self.drawn[cat] = len(rows)
            choices = np.asarray(pool) if pool else all_idx
            pick[rows] = self._rng.choice(choices, size=len(rows))
        return self.offsets[pick], self.lengths[pick]

    def accepted(self, start: np.ndarray, length: np.ndarray, pos: np.ndarray, k: int | np.ndarray) -> np.ndarray:
        """Greedy traces: accepted draft tokens per request for a K-token verification at position pos."""
        if self.mode != MODE_GREEDY:
            raise SpecsimError("accepted() is deterministic only for greedy traces")
        row = self.arrays.krow[np.minimum(k, len(self.arrays.krow) - 1)]
        return np.minimum(self.arrays.r[row, start + pos % length].astype(np.int64), k)
