"""`vramwatch models synth|quantize|prepare|inspect`: the model factory's steps, one at a time."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from vramwatch.cli.common import add_engine, add_matrix, engine
from vramwatch.config import Paths, load_matrix

VOCAB_ENV = "VRAMWATCH_VOCAB_DIR"


def _vocab_dir(args: argparse.Namespace) -> Path:
    if args.vocab_dir:
        return Path(args.vocab_dir)
    if os.environ.get(VOCAB_ENV):
        return Path(os.environ[VOCAB_ENV])
    from vramwatch.builds.engine import newest_engine
    from vramwatch.models.prepare import vocab_dir

    return vocab_dir(newest_engine(Paths()))


def _synth(args: argparse.Namespace) -> int:
    from vramwatch.models.specs import get_spec
    from vramwatch.models.synth import write_gguf

    print(write_gguf(get_spec(args.name, args.scale), Path(args.out), _vocab_dir(args), seed=args.seed))
    return 0


def _quantize(args: argparse.Namespace) -> int:
    from vramwatch.models.quantize import quantize_gguf

    result = quantize_gguf(args.src, args.type, engine(args), args.out, nthread=args.nthread, dry_run=args.dry_run)
    where = "dry run, nothing written" if result.dry_run else str(result.path)
    print(f"{args.type.upper()}: {result.file_bytes / 2**30:.2f} GiB ({result.file_bytes} bytes), "
          f"{len(result.fallback_tensors)} fallback tensor(s), {where}")
    return 0


def _prepare(args: argparse.Namespace) -> int:
    from vramwatch.models.prepare import prepare_models

    prepared = [model for _, model in prepare_models(load_matrix(args.matrix), engine(args), Paths())]
    ready = [model for model in prepared if not model.error]
    total = sum(model.file_bytes for model in ready)
    print(f"{len(ready)} of {len(prepared)} model files ready ({total / 2**30:.2f} GiB) under {Paths().models}")
    for model in prepared:
        if model.error:
            print(f"not made: {model.model} {model.quant}: {model.error}", file=sys.stderr)
    return 0 if len(ready) == len(prepared) else 1  # a file not made is a failure here, however many were


def _inspect(args: argparse.Namespace) -> int:
    from vramwatch.models.inspect import active_bytes_per_token, inspect_gguf

    record = inspect_gguf(args.file)
    active, expert = active_bytes_per_token(args.file)
    print(json.dumps({**record.to_dict(), "active_bytes_per_token": active, "expert_active_bytes": expert},
                     indent=1))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    from vramwatch.models.specs import SCALES, SPEC_NAMES

    models = subparsers.add_parser("models", help="make, quantize and inspect GGUF model files")
    sub = models.add_subparsers(dest="models_command", metavar="STEP", required=True)

    synth = sub.add_parser("synth", help="write a shape-true synthetic GGUF (random weights, real tokenizer)")
    synth.add_argument("name", choices=SPEC_NAMES)
    synth.add_argument("--scale", choices=SCALES, default="tiny")
    synth.add_argument("--out", default=".", help="directory to write into (default: here)")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--vocab-dir", help=f"llama.cpp's models/ folder with ggml-vocab-*.gguf "
                                           f"(default: ${VOCAB_ENV}, else the newest build's source)")
    synth.set_defaults(func=_synth)

    quant = sub.add_parser("quantize", help="quantize a GGUF with llama.cpp's llama_model_quantize")
    quant.add_argument("src")
    quant.add_argument("--type", required=True, help="llama.cpp file type: Q4_K_M, Q2_K, Q8_0, ...")
    quant.add_argument("--out", help="output file (default: SRC-TYPE.gguf beside SRC)")
    quant.add_argument("--dry-run", action="store_true", help="only predict the size")
    quant.add_argument("--nthread", type=int, default=0, help="threads (0 = all cores)")
    add_engine(quant)
    quant.set_defaults(func=_quantize)

    prepare = sub.add_parser("prepare", help="make every (model, quant) file of a matrix (cached)")
    add_matrix(prepare)
    add_engine(prepare)
    prepare.set_defaults(func=_prepare)

    inspect = sub.add_parser("inspect", help="print a GGUF's ModelFile record and active bytes per token")
    inspect.add_argument("file")
    inspect.set_defaults(func=_inspect)
