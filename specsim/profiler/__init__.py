"""Profiler: measure step costs and acceptance traces through a real engine (vLLM) into a profile."""
