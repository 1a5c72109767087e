"""The ABI guard: a git-source build wraps a llama.cpp commit in bindings written for another llama.h.

ctypes cannot see a struct change: if llama.h grew a field, the bindings still pass the old layout by value and
llama.cpp reads every later field at the wrong offset (a context of the wrong size, flash attention flipped, a
crash), and the bench would measure that. So before a commit build counts as built, a small C program compiled
against that tree's llama.h prints the size and field offsets of every struct the engine hands to llama.cpp, and they
are compared with the bindings' ctypes declarations, read in the engine venv itself (abi_probe.py).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from vramwatch.builds.process import StepFailed, engine_env

# The structs the engine passes to llama.cpp (by value, or by pointer for it to read), with the bindings' field names
# that C spells otherwise: the bindings name the override's anonymous union "value"; C reaches it through a member,
# and its largest (char val_str[128]) has the union's offset and size.
GUARDED = {
    "llama_model_params": {},  # llama_model_load_from_file, by value
    "llama_context_params": {},  # llama_init_from_model, by value
    "llama_model_kv_override": {"value": "val_str"},  # llama_model_params.kv_overrides points at an array of them
    "llama_batch": {},  # llama_batch_init returns it, llama_decode takes it, by value
    "llama_sampler_chain_params": {},  # llama_sampler_chain_init, by value
    "llama_model_quantize_params": {},  # llama_model_quantize reads it (the models stage)
}
MISMATCH = "bindings do not match llama.h: "
SHOWN_DIFFERENCES = 4
_NO_MEMBER = (re.compile(r"'struct (\w+)' has no member named '(\w+)'"),  # gcc
              re.compile(r"no member named '(\w+)' in 'struct (\w+)'"))  # clang: member first
_INCOMPLETE = re.compile(r"incomplete type '(?:const )?struct (\w+)'")

Fields = dict[str, tuple[int, int]]  # field -> (offset, size)


@dataclass(frozen=True)
class Layout:
    size: int
    fields: Fields


def bindings_layouts(python: Path) -> dict[str, Layout | None]:
    """The bindings' ctypes layouts, read by the engine venv's own python (None: the bindings do not declare it)."""
    probe = Path(__file__).with_name("abi_probe.py")
    done = subprocess.run([str(python), "-I", str(probe), *GUARDED], capture_output=True, text=True, timeout=300,
                          env=engine_env())
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or [f"exited with status {done.returncode}"])[-1]
        raise StepFailed(f"ABI guard failed: the engine cannot report its ctypes layouts: {last}")
    found = json.loads(done.stdout.strip().splitlines()[-1])
    return {name: Layout(raw["size"], {f: (offset, size) for f, offset, size in raw["fields"]}) if raw else None
            for name, raw in found.items()}


def _program(wanted: dict[str, list[str]]) -> str:
    lines = ["#include <stddef.h>", "#include <stdio.h>", '#include "llama.h"', "int main(void) {"]
    for struct, fields in wanted.items():
        lines.append(f'    printf("{struct} %zu\\n", sizeof(struct {struct}));')
        for field in fields:
            lines.append(f'    printf("{struct}.{field} %zu %zu\\n", offsetof(struct {struct}, {field}), '
                         f"sizeof(((struct {struct} *)0)->{field}));")
    return "\n".join([*lines, "    return 0;", "}", ""])


def c_layouts(llama_tree: Path, wanted: dict[str, list[str]]) -> dict[str, Layout]:
    """Size and (offset, size) of each wanted field as llama.h lays them out, compiled with the C compiler the build
    uses. A struct or field llama.h lacks is left out of the answer (the compile is retried without it)."""
    wanted = {struct: list(fields) for struct, fields in wanted.items()}
    compiler = os.environ.get("CC", "cc")
    includes = [f"-I{llama_tree / 'include'}", f"-I{llama_tree / 'ggml' / 'include'}"]
    with tempfile.TemporaryDirectory(prefix="vramwatch-abi-") as scratch:
        source, binary = Path(scratch, "abi.c"), Path(scratch, "abi")
        while True:
            source.write_text(_program(wanted))
            done = subprocess.run([compiler, "-std=c11", *includes, str(source), "-o", str(binary)],
                                  capture_output=True, text=True, timeout=120, env={**os.environ, "LC_ALL": "C"})
            if done.returncode == 0:
                break
            absent = _absent(done.stderr, wanted)
            if not absent:
                first = next((line for line in done.stderr.splitlines() if "error" in line), done.stderr.strip())
                raise StepFailed(f"ABI guard failed: cannot compile its probe against {llama_tree}/include/llama.h: "
                                 f"{first.replace(f'{scratch}/', '')[:300]}")
            for struct, field in absent:
                if field is None:
                    del wanted[struct]
                else:
                    wanted[struct].remove(field)
        out = subprocess.run([str(binary)], capture_output=True, text=True, check=True, timeout=60).stdout
    layouts: dict[str, Layout] = {}
    for line in out.splitlines():
        name, *figures = line.split()
        struct, _, field = name.partition(".")
        if not field:
            layouts[struct] = Layout(int(figures[0]), {})
        else:
            layouts[struct].fields[field] = (int(figures[0]), int(figures[1]))
    return layouts


def _absent(errors: str, wanted: dict[str, list[str]]) -> set[tuple[str, str | None]]:
    """(struct, field) pairs of `wanted` the compiler says llama.h lacks; field None: the whole struct."""
    gcc, clang = _NO_MEMBER
    structs = {s for s in _INCOMPLETE.findall(errors) if s in wanted}
    fields = {(s, f) for s, f in gcc.findall(errors)} | {(s, f) for f, s in clang.findall(errors)}
    return {(s, None) for s in structs} | {(s, f) for s, f in fields if s not in structs and f in wanted.get(s, ())}


def differences(c: dict[str, Layout], bindings: dict[str, Layout | None]) -> list[str]:
    """Every way the bindings' layouts differ from llama.h's, struct by struct: its size first, then its fields."""
    found: list[str] = []
    for struct, aliases in GUARDED.items():
        declared = bindings.get(struct)
        if declared is None:
            continue  # the engine cannot pass what its bindings do not declare
        if struct not in c:
            found.append(f"{struct}: declared by the bindings, not in llama.h")
            continue
        if c[struct].size != declared.size:
            found.append(f"{struct}: C size {c[struct].size}, ctypes size {declared.size}")
        for field, (offset, size) in declared.fields.items():
            in_c = c[struct].fields.get(aliases.get(field, field))
            if in_c is None:
                found.append(f"{struct}.{field}: in the bindings, not in llama.h")
            elif in_c != (offset, size):
                found.append(f"{struct}.{field}: C offset {in_c[0]} size {in_c[1]}, "
                             f"ctypes offset {offset} size {size}")
    return found


def guard_bindings(python: Path, llama_tree: Path, log: Path) -> str:
    """Check the engine venv's bindings against the llama.h of `llama_tree` (a llama.cpp checkout); the result goes
    to the build log. Returns the one-line verdict; raises StepFailed starting with MISMATCH if they differ."""
    bindings = bindings_layouts(python)
    c = c_layouts(llama_tree, {struct: [GUARDED[struct].get(f, f) for f in layout.fields]
                               for struct, layout in bindings.items() if layout})
    found = differences(c, bindings)
    checked = [layout for layout in bindings.values() if layout]
    with open(log, "a", encoding="utf-8") as log_file:
        log_file.write(f"\n### ABI guard: {llama_tree}/include/llama.h against the bindings of {python}\n")
        log_file.writelines(f"{line}\n" for line in found or ["no difference"])
    if found:
        more = f" (+{len(found) - SHOWN_DIFFERENCES} more in the build log)" if len(found) > SHOWN_DIFFERENCES else ""
        raise StepFailed(MISMATCH + "; ".join(found[:SHOWN_DIFFERENCES]) + more)
    verdict = (f"ABI guard: bindings match llama.h ({len(checked)} structs, "
               f"{sum(len(layout.fields) for layout in checked)} fields: sizes and offsets)")
    with open(log, "a", encoding="utf-8") as log_file:
        log_file.write(verdict + "\n")
    return verdict
