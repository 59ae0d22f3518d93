"""`specsim serve`: check a policy against the model (and profile), then run a real vLLM server with it."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from specsim.errors import SpecsimError
from specsim.formats.policy import Policy
from specsim.formats.profile import Profile
from specsim.policies.export import Export, to_vllm

LOOPBACK = ("127.0.0.1", "localhost", "::1")
# Arguments the policy owns; passing them after `--` would silently override it.
POLICY_FLAGS = ("--speculative-config", "--speculative_config", "-sc")


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
    if spec.method != policy.drafter.method:
        raise SpecsimError(
            f"policy drafter {policy.drafter.name!r} uses method {policy.drafter.method!r}, "
            f"the profile measured {spec.method!r}"
        )
    if policy.max_k > min(spec.k_max, profile.k_max):
        raise SpecsimError(f"policy uses K={policy.max_k}, above the profile's k_max {min(spec.k_max, profile.k_max)}")


def check_drafter(policy: Policy, model_path: Path, device: str) -> None:
    """Refuse drafters this install or device cannot run, or whose vocabulary differs from the model's."""
    d = policy.drafter
    if d is None or policy.max_k == 0:
        return
    if d.method == "suffix" and importlib.util.find_spec("arctic_inference") is None:
        raise SpecsimError("drafter 'suffix' needs the 'arctic-inference' package, which is not installed")
    if d.method in ("eagle", "eagle3", "mtp") and device == "cpu":
        raise SpecsimError(f"drafter {d.method!r} needs a GPU build of vLLM and a trained head; not on this CPU")
    if d.method in ("draft_model", "eagle", "eagle3"):
        if not d.model:
            raise SpecsimError(f"drafter {d.name!r} ({d.method}) names no draft model")
        from specsim.models.prepare import check_same_vocabulary, resolve_model

        draft = resolve_model(d.model)
        if d.method == "draft_model":
            check_same_vocabulary(model_path, draft)


def check_extra_args(policy: Policy, extra: list[str]) -> None:
    """Refuse extra vLLM arguments that contradict the policy."""
    for a in extra:
        if a.split("=", 1)[0] in POLICY_FLAGS:
            raise SpecsimError(f"{a.split('=', 1)[0]} comes from the policy; do not pass it after --")
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
    if device == "cpu" and "--enforce-eager" not in extra and "--no-enforce-eager" not in extra:
        argv.append("--enforce-eager")
        notes.append("--enforce-eager: on CPU start-up drops from 75-170 s to about 25 s")
    argv += extra
    return ServerPlan(argv, dict(exp.env), exp, notes)


def server_env(plan: ServerPlan, device: str, workdir: Path | None = None) -> dict[str, str]:
    """The full environment for the server process (vLLM's offline/caching settings + the policy)."""
    from specsim.profiler.engine import prepare_env

    saved = dict(os.environ)
    try:
        prepare_env(device, workdir)
        env = dict(os.environ)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    env.update(plan.env)
    return env


def run_server(plan: ServerPlan, env: dict[str, str]) -> int:
    """Run the server in the foreground; Ctrl-C or SIGTERM stops it (and its engine process)."""
    proc = subprocess.Popen(plan.argv, env=env, start_new_session=True)

    def stop(signum: int, _frame: object) -> None:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)

    old_int = signal.signal(signal.SIGINT, stop)
    old_term = signal.signal(signal.SIGTERM, stop)
    try:
        try:
            return proc.wait()
        except BaseException:
            stop(signal.SIGTERM, None)
            raise
    finally:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGTERM, old_term)
