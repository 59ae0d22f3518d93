"""The prompt sets the profiler measures (moved to `specsim.prompts`, shared with serve, verify and the
tuner; this name stays for existing imports)."""

from specsim.prompts import BUILTIN, Prompt, load_jsonl_prompts, load_prompts, stratified

__all__ = ["BUILTIN", "Prompt", "load_jsonl_prompts", "load_prompts", "stratified"]
