"""Parity inputs for string models read like real text, and are the same on every run."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from exporter.verify.parity import sample_batches
from exporter.verify.sample_inputs import NO_TOKEN_TEXTS, random_inputs

VOCABULARY = np.array([b"red", b"green", b"cat", b"dog"], dtype=object)
TEXT = {"sentence": SimpleNamespace(shape=[None], dtype=np.dtype(object))}


def _texts(seed: int) -> list[bytes]:
    batch = random_inputs(TEXT, batch=400, seed=seed, vocabularies={"sentence": VOCABULARY})
    return batch["sentence"].tolist()


def test_strings_hold_case_punctuation_unknown_words_and_blanks() -> None:
    texts = _texts(0)
    words = [w for t in texts for w in t.split()]
    assert any(w.isupper() for w in words) and any(w.istitle() for w in words)
    assert any(w[-1:] in b',.!?;:"-' for w in words)
    assert any(w.startswith((b"oov", b"OOV", b"Oov")) for w in words)
    assert any(w in VOCABULARY.tolist() for w in words)
    assert set(NO_TOKEN_TEXTS) & set(texts)  # empty and blank strings
    assert any(b"\t" in t or b"  " in t for t in texts)  # runs of whitespace


def test_strings_are_the_same_on_every_run() -> None:
    assert _texts(3) == _texts(3) and _texts(3) != _texts(4)


def test_a_no_token_batch_joins_string_models_only() -> None:
    batches = sample_batches(TEXT, samples=1, batch_sizes=[2], vocabularies={})
    assert len(batches) == 2 and batches[1]["sentence"].tolist() == list(NO_TOKEN_TEXTS)
    numeric = {"x": SimpleNamespace(shape=[None, 3], dtype=np.dtype("float32"))}
    assert len(sample_batches(numeric, samples=1, batch_sizes=[2])) == 1
