"""The refine track's pieces: the matched teacher is built once and cached, and leaves the committed teacher as it was."""
import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
from cotdistill import refine
from cotdistill.core import ArtifactCache
from cotdistill.models import make_model
from cotdistill.sft import sft_tokenizer
from cotdistill.tasks import get_task


@pytest.fixture(scope="module")
def setup():
    task = get_task("arith")
    tok = sft_tokenizer(task)
    rows = task.splits(seed=0, n_train=16, n_validation=2, n_test=2)["train"].to_list()
    return task, tok, rows, make_model("tiny", tok, seed=1)


def test_matched_teacher_is_trained_once_and_cached(setup, tmp_path, monkeypatch):
    task, tok, rows, teacher = setup
    before = [p.detach().clone() for p in teacher.parameters()]
    cache = ArtifactCache(tmp_path)
    m1 = refine.matched_teacher(teacher, tok, task, rows, steps=3, lr=1e-2, batch_size=4, warmup_steps=1, cache=cache)
    assert all(torch.equal(a, p) for a, p in zip(before, teacher.parameters()))           # the committed teacher is not touched
    assert any(not torch.equal(a, p) for a, p in zip(before, m1.parameters()))             # the copy learnt
    assert m1.matched_info["steps"] == 3
    def no_training(*a, **k): raise RuntimeError("trained")
    monkeypatch.setattr(refine, "train", no_training)   # a cached matched teacher is loaded, never trained again
    m2 = refine.matched_teacher(teacher, tok, task, rows, steps=3, lr=1e-2, batch_size=4, warmup_steps=1, cache=cache)
    assert all(torch.equal(a, b) for a, b in zip(m1.parameters(), m2.parameters()))
    with pytest.raises(RuntimeError, match="trained"):   # other data is another artifact: it would train
        refine.matched_teacher(teacher, tok, task, rows[:8], steps=3, lr=1e-2, batch_size=4, warmup_steps=1, cache=cache)
    with pytest.raises(ValueError, match="empty"): refine.matched_teacher(teacher, tok, task, [], cache=cache)


def test_fingerprints_tell_models_and_data_apart(setup):
    task, tok, rows, teacher = setup
    assert refine.model_fingerprint(teacher) == refine.model_fingerprint(make_model("tiny", tok, seed=1))
    assert refine.model_fingerprint(teacher) != refine.model_fingerprint(make_model("tiny", tok, seed=2))
    assert refine.data_fingerprint(rows) != refine.data_fingerprint(rows[1:])
