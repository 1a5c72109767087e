"""Helpers the tests share: realistic records built in code (samples) and tiny real GGUF models (tiny_models)."""
