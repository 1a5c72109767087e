"""What the quality figure measures: a fixed English text for perplexity and a fixed prompt for a greedy continuation.

Runs inside the bench child (engine venv): stdlib, numpy and vramwatch.records only. Both inputs are fixed so a
change in the figures between two builds is a change in the build, not in the test.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vramwatch.records import GenerationTest

# ~360 tokens of plain English prose, written for vramwatch (no benchmark set, no licence question).
TEXT = Path(__file__).with_name("quality_text.txt").read_text(encoding="utf-8")
# Greedy decoding: the same build and weights must give the same text, so its hash is a regression signal.
GREEDY = GenerationTest(prompt="The old lighthouse keeper opened his logbook and wrote:", max_tokens=32,
                        temperature=0.0, seed=0)
LOGITS_BATCH = 128  # tokens decoded per call with every position's logits kept: bounds the n_vocab-wide buffer


def target_log_probs(logits: np.ndarray, targets: list[int]) -> np.ndarray:
    """log softmax(logits[i])[targets[i]] for each row i: the model's log-probability of the token that came next."""
    top = logits.max(axis=1, keepdims=True)
    log_norm = top[:, 0].astype(np.float64) + np.log(np.exp(logits - top).sum(axis=1, dtype=np.float64))
    return logits[np.arange(len(targets)), targets].astype(np.float64) - log_norm


def perplexity(total_log_prob: float, n_tokens: int) -> float:
    return float(np.exp(-total_log_prob / n_tokens))
