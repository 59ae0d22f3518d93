"""Local models for profiling: GGUF conversion and name resolution (no downloads)."""
