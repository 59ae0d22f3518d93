"""Live serving: export a policy to engines, serve it with vLLM, and replay traffic against a server."""
