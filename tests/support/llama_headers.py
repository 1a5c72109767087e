"""A llama.cpp tree holding only the headers a session engine was built from, optionally with llama.h edited the way
a llama.cpp commit changes it: include/ and ggml/include/ are all the ABI guard's C program needs."""

from __future__ import annotations

import shutil
from pathlib import Path


def headers_of(engine_build, dest: Path, edit: tuple[str, str] | None = None) -> Path:
    """A llama.cpp tree holding only the engine's headers; `edit` replaces one text of llama.h (it must be there)."""
    vendored = Path(engine_build.source_dir) / "vendor" / "llama.cpp"
    for folder in ("include", "ggml/include"):
        shutil.copytree(vendored / folder, dest / folder)
    if edit:
        header = dest / "include" / "llama.h"
        text = header.read_text()
        assert text.count(edit[0]) == 1, f"{edit[0]!r} is not once in llama.h"
        header.write_text(text.replace(*edit))
    return dest
