"""`specsim serve`: check a policy against the model (and profile), then run a real vLLM server with it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from specsim.errors import SpecsimError
from specsim.formats.policy import Policy, check_drafter_matches
from specsim.formats.profile import Profile
from specsim.policies.export import Export, to_vllm

LOOPBACK = ("127.0.0.1", "localhost", "::1")
# Options specsim sets itself, in every spelling vLLM's FlexibleArgumentParser reads: `--x=v`, underscores
# for dashes, dotted JSON fields (`--speculative-config.num_speculative_tokens 16`), and any unambiguous
# prefix (argparse's allow_abbrev: `--hos 0.0.0.0` is --host). Passing one after `--` would override the
# policy or bind where specsim did not (vllm/utils/argparse_utils.py, FlexibleArgumentParser.parse_args).
OWNED_FLAGS = {
    "--host": "specsim serve binds to loopback itself (use specsim's --host before --)",
    "--port": "use specsim's --port before --",
    "--uds": "specsim serve listens on a loopback TCP port only",
    "--speculative-config": "the speculative config comes from the policy",
    "-sc": "the speculative config comes from the policy",
    "--scheduler-cls": "specsim sets the scheduler class (queue rule, step recording)",
    "--model": "give the model with specsim's --model",
    "--config": "a config file can set any option, the policy's and the bind address included",
    "--no-enforce-eager": "specsim decides eager mode from the profile (--eager, --allow-mode-mismatch)",
    "--headless": "specsim serve runs an API server",
}


def _flag_value(args: list[str], flag: str) -> str | None:
    """Value of `--flag V` or `--flag=V` in an argument list (last one wins)."""
    value = None
    alt = flag.replace("-", "_")
    for i, a in enumerate(args):
        for f in (flag, "--" + alt[2:]):
            if a == f and i + 1 < len(args):
                value = args[i + 1]
            elif a.startswith(f + "="):
                value = a.split("=", 1)[1]
    return value


def canonical_model(name: str) -> str:
    """A comparable model identity: the default model's aliases collapse to one name."""
    from specsim.models.prepare import DEFAULT_FOLDER, DEFAULT_GGUF, DEFAULT_NAMES

    name = name.split(" (", 1)[0].strip()  # profiles may say "NAME (source details)"
    base = Path(name.rstrip("/")).name
    if name.lower() in DEFAULT_NAMES or base in (DEFAULT_FOLDER, DEFAULT_GGUF):
        return DEFAULT_FOLDER.lower()
    return Path(base).stem.lower() if base.lower().endswith(".gguf") else base.lower()


def check_against_profile(policy: Policy, profile: Profile, model: str) -> None:
    """Refuse a policy tuned on another profile, for another model, or with an unknown drafter."""
    digest = policy.provenance.profile_sha256
    if digest and digest != profile.digest():
        raise SpecsimError(
            f"policy was tuned on profile {digest[:12]}…, not this one ({profile.digest()[:12]}…)"
        )
    target = profile.metadata.target_model
    if canonical_model(target) != canonical_model(model):
        raise SpecsimError(f"policy's profile is for model {target!r}, but the server would run {model!r}")
    if policy.drafter is None:
        return
    spec = profile.drafters.get(policy.drafter.name)
    if spec is None:
        have = ", ".join(profile.drafters) or "none"
        raise SpecsimError(f"policy drafter {policy.drafter.name!r} is not in the profile (has: {have})")
    check_drafter_matches(policy, profile)
    if policy.max_k > min(spec.k_max, profile.k_max):
        raise SpecsimError(f"policy uses K={policy.max_k}, above the profile's k_max {min(spec.k_max, profile.k_max)}")


def check_drafter(policy: Policy, model_path: Path, device: str) -> None:
    """Refuse drafters this install or device cannot run, or whose vocabulary differs from the model's."""
    from specsim.vllmkit.env import check_drafter_runnable

    d = policy.drafter
    if d is None or policy.max_k == 0:
        return
    if d.method in ("draft_model", "eagle", "eagle3") and not d.model:
        raise SpecsimError(f"drafter {d.name!r} ({d.method}) names no draft model")
    check_drafter_runnable(d.method, d.model, device, model_path)


def owned_flag(arg: str) -> str | None:
    """The option specsim owns that `arg` would set in vLLM's parser, or None."""
    if not arg.startswith("-") or arg in ("-", "--"):
        return None
    name = arg.split("=", 1)[0]
    if name.startswith("--"):
        name = "--" + name[2:].replace("_", "-")
    name = name.split(".", 1)[0].rstrip("+")
    for flag in OWNED_FLAGS:
        # exact, or an abbreviation argparse would expand to it (2+ characters after the dashes)
        if name == flag or (flag.startswith("--") and len(name) >= 4 and flag.startswith(name)):
            return flag
    return None


CHECKED_FLAGS = ("--max-num-seqs", "--max-num-batched-tokens", "--dtype", "--enforce-eager", "--max-model-len",
                 "--seed", "--no-enable-prefix-caching", "--enable-prefix-caching")
"""Options specsim compares with the policy and profile: they must be spelled out to be compared."""


def check_extra_args(policy: Policy, extra: list[str]) -> None:
    """Refuse extra vLLM arguments that contradict the policy or override what specsim sets."""
    for a in extra:
        name = "--" + a.split("=", 1)[0][2:].replace("_", "-") if a.startswith("--") else ""
        short = next((f for f in CHECKED_FLAGS if name != f and len(name) >= 4 and f.startswith(name)
                      and name not in CHECKED_FLAGS), None)
        if short is not None:
            raise SpecsimError(f"{a.split('=', 1)[0]} after --: write {short} in full (specsim checks it against "
                               "the policy and profile)")
        if "\0" in a or "\n" in a:
            raise SpecsimError("vLLM arguments after -- must not hold NUL or newline characters")
        flag = owned_flag(a)
        if flag is not None:
            shown = a.split("=", 1)[0]
            raise SpecsimError(f"{shown} after -- is refused: {OWNED_FLAGS[flag]}")
    for flag in ("--max-num-seqs", "--max-num-batched-tokens"):
        value = _flag_value(extra, flag)
        if value is not None and not (value.isascii() and value.isdigit() and 1 <= int(value) <= 1 << 40):
            raise SpecsimError(f"{flag} after -- must be a positive integer, got {value!r}")
    want = policy.engine.max_num_seqs
    got = _flag_value(extra, "--max-num-seqs")
    if want is not None and got is not None and got != str(want):
        raise SpecsimError(f"policy was tuned with max_num_seqs={want}, but --max-num-seqs {got} was given")
    want_t = policy.engine.max_num_batched_tokens
    got_t = _flag_value(extra, "--max-num-batched-tokens")
    if want_t is not None and got_t is not None and got_t != str(want_t):
        raise SpecsimError(
            f"policy was tuned with max_num_batched_tokens={want_t}, but --max-num-batched-tokens {got_t} was given"
        )


# Engine arguments a profile records (vllm.LLM keyword) -> `vllm serve` flag.
PROFILE_FLAGS = {
    "dtype": "--dtype",
    "max_model_len": "--max-model-len",
    "max_num_seqs": "--max-num-seqs",
    "max_num_batched_tokens": "--max-num-batched-tokens",
    "seed": "--seed",
}


def profile_engine_kwargs(profile: Profile) -> dict[str, object]:
    """The `vllm.LLM` keywords the profile was measured with (its K = 0 engine), if it recorded them."""
    args = profile.metadata.engine_args
    engines = args.get("engines")
    if isinstance(engines, dict) and engines:
        first = engines.get("k0") or engines.get(min(engines)) or next(iter(engines.values()))
        kw = first.get("llm_kwargs") if isinstance(first, dict) else None
        if isinstance(kw, dict):
            return kw
    return {k: v for k, v in args.items() if k in PROFILE_FLAGS or k == "enable_prefix_caching"}


def profile_serve_args(profile: Profile, policy: Policy, extra: list[str]) -> list[str]:
    """`vllm serve` flags that reproduce the profile's engine settings, except those given or set by the policy."""
    kw = profile_engine_kwargs(profile)
    out: list[str] = []
    for key, flag in PROFILE_FLAGS.items():
        if key not in kw or _flag_value(extra, flag) is not None:
            continue
        if (key == "max_num_seqs" and policy.engine.max_num_seqs is not None) or (
            key == "max_num_batched_tokens" and policy.engine.max_num_batched_tokens is not None
        ):
            continue
        out += [flag, str(kw[key])]
    if kw.get("enable_prefix_caching") is False and not any("prefix-caching" in a for a in extra):
        out.append("--no-enable-prefix-caching")
    return out


@dataclass
class ServerPlan:
    """The exact process `specsim serve` starts."""

    argv: list[str]
    env: dict[str, str]
    """Variables set on top of the inherited environment."""
    export: Export
    notes: list[str] = field(default_factory=list)

    def shell(self) -> str:
        """The command as one shell line."""
        import shlex

        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in self.env.items())
        return f"{env} {shlex.join(self.argv)}".strip()


def plan_server(
    policy: Policy,
    model_path: Path,
    host: str = "127.0.0.1",
    port: int = 8000,
    extra: list[str] | None = None,
    device: str = "cpu",
    python: str | None = None,
    eager: bool = False,
    record_steps: Path | None = None,
) -> ServerPlan:
    """Build the `vllm serve` command and environment for a checked policy."""
    extra = list(extra or [])
    check_extra_args(policy, extra)
    seqs = _flag_value(extra, "--max-num-seqs")
    exp = to_vllm(policy, int(seqs) if seqs else None)
    args = [a for a in exp.args]
    if seqs:  # the user's value is already in extra
        i = args.index("--max-num-seqs")
        del args[i : i + 2]
    argv = [python or sys.executable, "-m", "specsim.policies.vllm_launch", "serve", str(model_path),
            "--host", host, "--port", str(port), *args]
    notes = list(exp.notes)
    env = dict(exp.env)
    if eager and "--enforce-eager" not in extra:
        argv.append("--enforce-eager")
        notes.append("--enforce-eager: starts in about 25 s on CPU instead of 75-170 s, but is not how vLLM serves "
                     "by default")
    if record_steps is not None:
        from specsim.vllmkit.policy_scheduler import SCHEDULER
        from specsim.vllmkit.recorder import ENV as STEP_LOG_ENV

        if "--scheduler-cls" not in argv:  # specsim's scheduler (a queue rule) records steps too
            argv += ["--scheduler-cls", SCHEDULER]
        env[STEP_LOG_ENV] = str(record_steps)
        notes.append(f"recording every engine step to {record_steps} (composition and period)")
    argv += extra
    return ServerPlan(argv, env, exp, notes)


def check_mode(profile: Profile, extra: list[str], eager: bool) -> None:
    """Refuse to serve in another dtype or compilation mode than the profile measured: step costs,
    and so where speculation stops paying, depend on both."""
    mode = profile.target.mode
    if mode is None:
        return
    want_eager = not mode.compiled
    got_eager = eager or "--enforce-eager" in extra
    if want_eager != got_eager:
        raise SpecsimError(
            f"the profile was measured {'eagerly' if want_eager else 'compiled (vLLM default)'} but the server would "
            f"run {'eagerly' if got_eager else 'compiled'}: step costs differ between modes "
            f"({'drop --eager' if got_eager else 'add --eager'}, or pass --allow-mode-mismatch)")
    dtype = _flag_value(extra, "--dtype")
    if dtype is not None and dtype not in ("auto", mode.dtype):
        raise SpecsimError(f"the profile was measured in {mode.dtype} but --dtype {dtype} was given "
                           "(or pass --allow-mode-mismatch)")


def server_env(plan: ServerPlan, device: str, port: int, workdir: Path | None = None) -> dict[str, str]:
    """The full environment for the server process (vLLM's offline/caching settings + the policy).

    Each port gets private cache, RPC and temporary folders, so a server never waits on files that a
    profiler run or another server holds.
    """
    from specsim.models.prepare import cache_root
    from specsim.vllmkit.env import prepare_env

    base = workdir if workdir is not None else cache_root() / "serve" / f"port-{port}"
    saved = dict(os.environ)
    try:
        prepare_env(device, base)
        env = dict(os.environ)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    tmp = base / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    env.setdefault("TMPDIR", str(tmp))
    env.update(plan.env)
    return env


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, start time) of a process from /proc, or None if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[1]), int(fields[19])
    except (OSError, ValueError, IndexError):
        return None


def descendants(pid: int) -> list[tuple[int, int]]:
    """(pid, start time) of every process below `pid`, read from /proc; empty where unavailable."""
    children: dict[int, list[tuple[int, int]]] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        st = _stat(int(entry.name))
        if st is not None:
            children.setdefault(st[0], []).append((int(entry.name), st[1]))
    out: list[tuple[int, int]] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child[0])
    return out


def kill_tree(tree: list[tuple[int, int]]) -> None:
    """SIGKILL the listed processes that still exist with the same start time (no pid-reuse accidents)."""
    for pid, started in tree:
        st = _stat(pid)
        if st is not None and st[1] == started:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


def run_server(plan: ServerPlan, env: dict[str, str], grace: float = 30.0) -> int:
    """Run the server in the foreground; Ctrl-C or SIGTERM stops it and the engine processes it started.

    A stop request gives the server `grace` seconds to shut down, then it and its children are killed.
    """
    proc = subprocess.Popen(plan.argv, env=env)
    tree: list[tuple[int, int]] = []
    stop_at: list[float] = []

    def stop(signum: int, _frame: object) -> None:
        if not stop_at:
            stop_at.append(time.monotonic())
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)

    old_int = signal.signal(signal.SIGINT, stop)
    old_term = signal.signal(signal.SIGTERM, stop)
    try:
        while True:
            tree = descendants(proc.pid) or tree
            try:
                return proc.wait(timeout=1.0)
            except subprocess.TimeoutExpired:
                if stop_at and time.monotonic() - stop_at[0] > grace:
                    proc.kill()
                    return proc.wait()
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        kill_tree(tree)
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGTERM, old_term)
