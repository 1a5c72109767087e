"""Builds: detect new llama.cpp builds, build them into isolated venvs (CPU or CUDA), and pack slim bundles."""
