"""Builds: detect new llama.cpp builds, build them into isolated venvs (CPU or CUDA), and pack slim bundles."""

from vramwatch.builds.backend import build_request, cuda_architectures, resolve_backend
from vramwatch.builds.bundle import make_bundle
from vramwatch.builds.detect import check_for_new_build
from vramwatch.builds.engine import build_engine, engine_for, list_builds, newest_engine

__all__ = [
    "build_engine",
    "build_request",
    "check_for_new_build",
    "cuda_architectures",
    "list_builds",
    "make_bundle",
    "resolve_backend",
]
