"""Run by the ABI guard (builds/abi.py) with an engine venv's python: the ctypes layout of the bindings' structs.

Usage: <engine python> -I abi_probe.py STRUCT...
Prints one JSON object: struct -> {"size": bytes, "fields": [[name, offset, size], ...]}, or null for a struct the
bindings do not declare. Imports only the stdlib and llama_cpp, so it runs in any engine venv.
"""

import ctypes
import json
import sys

import llama_cpp.llama_cpp as bindings


def layout(name: str) -> dict | None:
    declared = getattr(bindings, name, None)
    if declared is None:
        return None
    fields = [[field[0], getattr(declared, field[0]).offset, getattr(declared, field[0]).size]
              for field in declared._fields_]
    return {"size": ctypes.sizeof(declared), "fields": fields}


print(json.dumps({name: layout(name) for name in sys.argv[1:]}))
