"""Bisection to the llama-cpp-python release or llama.cpp commit that changed a config's VRAM or speed."""
