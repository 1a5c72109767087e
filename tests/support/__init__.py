"""Helpers the tests share: realistic records built in code (samples), tiny real GGUF models (tiny_models), local
git repositories (git_repos)."""
