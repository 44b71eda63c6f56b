"""Held-out loss: a clean cut of the token stream, forward only, bitwise the same for any T.

The split is checked by position: with a stream whose token at index i is i + 4, every value
in a training batch names the stream position it came from.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from support import digest, run_cli

from fast.trainer import FastTrainer
from harness.figures.thresholds import LOSS_TOL
from harness.run.checkpoint import load_checkpoint
from harness.run.corpus import Corpus
from harness.run.heldout import heldout_cut, plan_heldout, split_heldout
from plumbing.errors import InputError
from reference.config import preset
from reference.data import Vocab
from reference.engine import ReferenceEngine

CFG = preset("tiny")  # B=4, S=16, G=8
B, S = CFG.train.batch_size, CFG.model.seq_len
OFFSET = 4  # ids 0..3 are special; position i holds id i + OFFSET


def _positional_corpus(n: int) -> Corpus:
    return Corpus(source="positions", vocab=Vocab.build([], CFG.model.vocab_size),
                  stream=np.arange(n, dtype=np.int64) + OFFSET, n_documents=1)


def _random_corpus(n: int, seed: int = 0) -> Corpus:
    stream = np.random.default_rng(seed).integers(1, CFG.model.vocab_size, n)
    return Corpus(source="random", vocab=Vocab.build([], CFG.model.vocab_size), stream=stream,
                  n_documents=1)


@pytest.mark.parametrize("n, fraction", [(2049, 0.1), (1000, 0.05), (777, 0.5), (130, 0.2)])
def test_no_heldout_token_is_an_input_or_target_of_any_training_batch(n, fraction):
    train, held = split_heldout(_positional_corpus(n), CFG, fraction)
    assert held.start == train.stream.size and held.start + held.n_tokens == n
    seen = []
    for group in train.groups(CFG):  # the whole epoch, including a short padded last group
        for ids in (group.tokens, group.targets):
            seen.append(ids[ids != 0] - OFFSET)
    positions = np.concatenate(seen)
    assert positions.max() == held.start - 1  # training reaches right up to the cut...
    assert positions.min() == 0
    held_positions = np.concatenate([held.tokens[held.tokens != 0],
                                     held.targets[held.targets != 0]]) - OFFSET
    assert held_positions.min() == held.start  # ...and the held-out batches start after it
    assert held_positions.max() == n - 1
    assert not np.intersect1d(positions, held_positions).size


def test_cut_depends_on_stream_and_fraction_only_and_bad_fractions_are_input_errors():
    assert heldout_cut(1000, 0.1) == 900
    assert heldout_cut(10, 0.01) == 8  # at least two tokens are held out
    for bad in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(InputError, match="--eval-fraction"):
            heldout_cut(1000, bad)
    with pytest.raises(InputError, match="leaves"):
        heldout_cut(4, 0.9)
    corpus = _random_corpus(500)
    assert plan_heldout(corpus, CFG, eval_every=0, eval_fraction=None) == (corpus, None)
    with pytest.raises(InputError, match="--eval-every"):
        plan_heldout(corpus, CFG, eval_every=-1, eval_fraction=None)


def _trained_params(steps: int = 2) -> dict:
    """Parameters after a few reference steps, so the loss is not the initial one."""
    corpus = _random_corpus(2049, seed=1)
    ref = ReferenceEngine(CFG)
    for group in list(corpus.groups(CFG))[:steps]:
        ref.step(group.tokens, group.targets)
    return ref.state().params


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_heldout_loss_is_bitwise_the_same_for_every_thread_count(dtype, no_thread_leak):
    params = _trained_params()
    _, held = split_heldout(_random_corpus(3001, seed=2), CFG, 0.3)  # 15 batches
    assert held.n_batches > 12  # more batches than symmetry positions
    losses = {}
    for T in (1, 2, 3, 5, 12, 13):
        with FastTrainer(CFG, T, dtype, params=params) as trainer:
            result = trainer.eval_loss(held.tokens, held.targets)
            assert result.batches == held.n_batches and result.n_targets > 0
            losses[T] = result.loss.hex()
    assert len(set(losses.values())) == 1, losses


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_heldout_loss_matches_the_reference_and_the_training_forward(dtype, no_thread_leak):
    params = _trained_params()
    _, held = split_heldout(_random_corpus(3001, seed=2), CFG, 0.3)
    ref = ReferenceEngine(CFG, params=params).eval_loss(held.tokens, held.targets)
    with FastTrainer(CFG, 3, dtype, params=params) as trainer:
        fast = trainer.eval_loss(held.tokens, held.targets)
        # the forward-only path computes the training kernel's loss, bit for bit
        trained = trainer.group_grads(held.tokens, held.targets)
    assert fast.n_targets == ref.n_targets == trained.n_targets
    assert fast.loss == trained.loss
    assert abs(fast.loss - ref.loss) / ref.loss <= LOSS_TOL[dtype]


def test_evaluating_changes_no_weights_and_no_later_step(no_thread_leak):
    corpus = _random_corpus(2049, seed=3)
    train, held = split_heldout(corpus, CFG, 0.2)
    groups = list(train.groups(CFG))[:2]
    finals = []
    for evaluate in (False, True):
        with FastTrainer(CFG, 2, "float64") as trainer:
            for group in groups:
                if evaluate:
                    trainer.eval_loss(held.tokens, held.targets)
                trainer.step(group.tokens, group.targets)
            finals.append(digest(trainer.state().params))
    assert finals[0] == finals[1]


def test_train_eval_every_reports_in_json_lines_and_checkpoint(capsys, tmp_path,
                                                               no_thread_leak):
    js, ck = tmp_path / "s.json", tmp_path / "ck"
    code, _, err = run_cli(["train", "--threads", "2", "--steps", "3", "--eval-every", "2",
                            "--eval-fraction", "0.2", "--json", str(js), "--checkpoint-dir",
                            str(ck)], capsys)
    assert code == 0, err
    summary = json.loads(js.read_text())
    assert [step for step, _ in summary["eval_losses"]] == [2, 3]  # every 2 steps and the end
    assert summary["final_eval_loss"] == summary["eval_losses"][-1][1]
    assert sum("eval loss" in ln for ln in err.splitlines()) == 2
    extra = load_checkpoint(sorted(ck.glob("step-*.npz"))[-1]).extra
    assert extra["eval_loss"] == summary["final_eval_loss"] and extra["eval_step"] == 3
