"""The bench stage: one child process per config (modes, timing, memory, fingerprint) and its parent.

The child runs inside the engine's venv, which has only the stdlib, numpy and llama_cpp: it imports this package,
so this file imports nothing."""
