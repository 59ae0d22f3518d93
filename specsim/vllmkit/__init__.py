"""Code that runs inside or beside a vLLM engine, shared by the profiler and the live server
(it sits below both: neither stage imports the other)."""
