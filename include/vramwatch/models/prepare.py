"""Make every (model, quant) file a matrix asks for, reusing whatever is already on disk and still valid.

Synthetic sources are keyed by their spec digest (file name); quantized files by (source sha256, file type,
llama.cpp commit), with the ModelFile record (fallback count included) stored beside each as JSON. A second run
with nothing changed writes nothing.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from vramwatch.config import Matrix, ModelEntry, Paths, SynthSource
from vramwatch.errors import UserError
from vramwatch.models import sources, synth
from vramwatch.models.inspect import inspect_gguf, partial_path, quant_name, read_header, sha256_file
from vramwatch.models.quantize import quantize_gguf
from vramwatch.models.specs import get_spec
from vramwatch.progress import for_stage
from vramwatch.records import BuildRecord, ModelFile

NATIVE = "native"  # bench the source file as it is


_say = for_stage("models")


def vocab_dir(build: BuildRecord) -> Path:
    """llama.cpp's vocab GGUFs in the build's source tree."""
    return Path(build.source_dir) / "vendor" / "llama.cpp" / "models"


def quantized_tag(build: BuildRecord) -> str:
    """What names the build in its quantized files (they end in -<tag>.gguf): its llama.cpp commit."""
    return build.llama_cpp_commit or build.llama_cpp_python_version


class _Preparer:
    def __init__(self, build: BuildRecord, paths: Paths) -> None:
        self.build, self.paths = build, paths
        self.synthesized = self.quantized = self.reused = 0

    def source(self, entry: ModelEntry) -> Path:
        if not isinstance(entry.source, SynthSource):
            return sources.resolve(entry.source, self.paths)
        spec = get_spec(entry.source.synth, entry.source.scale)
        path = self.paths.models / "synth" / synth.file_name(spec)
        if path.is_file():
            _say(f"{entry.name}: source {path.name} (cached)")
            return path
        self.synthesized += 1
        return synth.write_gguf(spec, path.parent, vocab_dir(self.build))

    def model_file(self, entry: ModelEntry, src: Path, quant: str) -> ModelFile:
        synthetic = isinstance(entry.source, SynthSource)
        scale = entry.source.scale if isinstance(entry.source, SynthSource) else ""
        src_quant = quant_name(read_header(src))
        # The source already is that type (phi-3.5-moe's Q8_0 source, say): bench it rather than copy it.
        if quant.upper() in (NATIVE.upper(), src_quant):
            return inspect_gguf(src, model=entry.name, synthetic=synthetic, scale=scale)
        quant = quant.upper()
        out = (self.paths.models / "quantized" /
               f"{src.name.removesuffix('.gguf')}-{quant}-{sha256_file(src)[:12]}-{quantized_tag(self.build)}.gguf")
        record_path = out.with_name(out.name + ".json")
        record = _cached_record(record_path) if out.is_file() else None
        if record is not None:
            if record.file_bytes == out.stat().st_size:
                self.reused += 1
                _say(f"{entry.name} {quant}: {out.name} (cached)")
                return ModelFile.from_dict({**record.to_dict(), "model": entry.name, "path": str(out)})
        result = quantize_gguf(src, quant, self.build, out)
        record = inspect_gguf(out, model=entry.name, quant=quant, synthetic=synthetic, scale=scale,
                              fallback_tensors=len(result.fallback_tensors))
        partial = partial_path(record_path)  # renamed into place: a crash never leaves half a record
        partial.write_text(record.to_json(indent=1))
        os.replace(partial, record_path)
        self.quantized += 1
        _say(f"{entry.name} {quant}: quantized in {result.seconds:.1f}s, {record.file_bytes / 2**20:.1f} MiB, "
             f"{record.fallback_tensors} fallback tensor(s)")
        return record


def _cached_record(path: Path) -> ModelFile | None:
    """The quantized file's record, or None when there is none or it does not read (then the file is made again)."""
    try:
        return ModelFile.from_json(path.read_text())
    except (OSError, ValueError, TypeError):
        return None


def prepare_models(matrix: Matrix, build: BuildRecord, paths: Paths) -> list[tuple[ModelEntry, ModelFile]]:
    """Every (model, quant) file of the matrix, as (entry, ModelFile) pairs in matrix order."""
    started = time.monotonic()
    preparer = _Preparer(build, paths)
    prepared = []
    for entry in matrix.models:
        try:  # one missing or broken source costs its own configs, not the night
            src = preparer.source(entry)
        except UserError as exc:
            _say(f"{entry.name}: no source: {exc}")
            prepared += [(entry, ModelFile.unavailable(entry.name, quant, f"model source: {exc}"))
                         for quant in matrix.quants_for(entry)]
            continue
        for quant in matrix.quants_for(entry):
            try:
                prepared.append((entry, preparer.model_file(entry, src, quant)))
            except UserError as exc:
                _say(f"{entry.name} {quant}: {exc}")
                prepared.append((entry, ModelFile.unavailable(entry.name, quant, f"{quant}: {exc}")))
    _say(f"prepared {len(prepared)} model files for {len(matrix.models)} models: {preparer.synthesized} synthesized, "
         f"{preparer.quantized} quantized, {preparer.reused} from cache ({time.monotonic() - started:.1f}s)")
    return prepared
