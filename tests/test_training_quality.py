"""Training a user can trust (issue 14): exact synthetic corpus sizes, no step on a sliver of a
group, a learning-rate schedule that fits the run, and shuffled epochs that resume bitwise."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support import digest, rel, run_cli

from fast.trainer import FastTrainer
from harness.run.checkpoint import latest_checkpoint, load_checkpoint
from harness.run.corpus import load_corpus, one_group_tokens
from harness.run.train import run_training
from harness.run.train_plan import TrainPlan, planned_steps, with_horizon
from reference.batches import LAST_GROUP_POLICIES, MIN_TAIL_FRACTION, BatchGroups
from reference.config import Config, preset
from reference.engine import ReferenceEngine
from reference.epoch_order import EpochOrder, group_order
from reference.optim import lr_at

TINY = preset("tiny")  # B=4, S=16, G=8: a full group is 512 targets


# -- 1. the synthetic corpus has exactly the tokens asked for ----------------------------------

@pytest.mark.parametrize("n", [2, 3, 97, 2049, 49153])
@pytest.mark.parametrize("seed", [0, 1, 11])
def test_synthetic_stream_has_exactly_the_tokens_asked_for(n, seed):
    cfg = preset("small" if n == 49153 else "tiny", seed=seed)
    assert load_corpus(cfg, None, synthetic_tokens=n).stream.size == n


@pytest.mark.parametrize("name", ["tiny", "small"])
def test_default_train_corpus_is_four_full_groups(name):
    """The default `spheres train` corpus: no fifth group holding one target (issue 14)."""
    cfg = preset(name)
    groups = load_corpus(cfg, None, synthetic_tokens=one_group_tokens(cfg, 4)).groups(cfg)
    counts = [int(np.count_nonzero(g.targets)) for g in groups]
    assert counts == [groups.full_group_targets] * 4


# -- 2. the tail-group policy ------------------------------------------------------------------

@settings(max_examples=150, deadline=None)
@given(B=st.integers(1, 5), S=st.integers(1, 9), G=st.integers(1, 7),
       n_groups=st.integers(0, 5), extra=st.integers(0, 400),
       policy=st.sampled_from(LAST_GROUP_POLICIES))
def test_no_group_below_the_policys_bound(B, S, G, n_groups, extra, policy):
    full = G * B * S
    n = max(2, n_groups * full + extra % (2 * full) + 1)  # awkward lengths around group edges
    stream = np.arange(1, n + 1, dtype=np.int64)  # no <pad> inside: every target counts
    groups = BatchGroups(stream, B, S, G, last_group=policy)
    keep = BatchGroups(stream, B, S, G, last_group="keep")
    counts = [int(np.count_nonzero(g.targets)) for g in groups]
    assert counts and all(c > 0 for c in counts)
    if policy != "keep" and len(keep) > 1:
        assert min(counts) >= MIN_TAIL_FRACTION * full, (counts, full)
    if policy == "merge":
        assert max(counts) < (1 + MIN_TAIL_FRACTION) * full
    # every target is trained on exactly once, in corpus order, or counted as dropped
    trained = np.concatenate([g.targets[g.targets != 0] for g in groups])
    assert trained.tolist() == stream[1:1 + trained.size].tolist()
    assert trained.size + groups.dropped_targets == n - 1
    assert (groups.dropped_targets > 0) == (policy == "drop" and len(groups) < len(keep))
    assert len(keep) - len(groups) in (0, 1) and groups.merged == (
        policy == "merge" and len(groups) < len(keep))


def test_a_one_target_tail_is_merged_dropped_or_kept():
    full = TINY.train.group_size * TINY.train.batch_size * TINY.model.seq_len
    stream = np.arange(1, 4 * full + 3) % 60 + 4  # 4 full groups and a tail of 1 target...
    stream = stream[:4 * full + 2]  # ...: N - 1 = 4 * full + 1 targets
    by = {p: BatchGroups(stream, 4, 16, 8, last_group=p) for p in LAST_GROUP_POLICIES}
    assert [len(by[p]) for p in ("keep", "merge", "drop")] == [5, 4, 4]
    assert np.count_nonzero(by["keep"].group(4).targets) == 1
    assert by["merge"].group(3).n_batches == 9 and by["drop"].dropped_targets == 1


def test_a_merged_group_is_the_same_computation_on_both_engines(no_thread_leak):
    """Reference and fast engine see the same merged group; T=1 and T=3 agree bitwise."""
    cfg = TINY.replace(last_group="merge")
    corpus = load_corpus(cfg, None, synthetic_tokens=one_group_tokens(cfg, 2) + 200)
    groups = corpus.groups(cfg)
    last = groups.group(len(groups) - 1)
    assert groups.merged and last.n_batches > cfg.train.group_size
    ref = ReferenceEngine(cfg).group_grads(last.tokens, last.targets)
    digests = []
    for threads in (1, 3):
        with FastTrainer(cfg, threads, dtype=np.float64) as tr:
            r = tr.group_grads(last.tokens, last.targets)
        digests.append(digest(r.grads))
        assert r.n_targets == ref.n_targets == np.count_nonzero(last.targets)
        assert abs(r.loss - ref.loss) <= 1e-10 * abs(ref.loss)
        for name, g in ref.grads.items():
            assert rel(r.grads[name], g) <= 1e-10, name
    assert digests[0] == digests[1]


# -- 3. the learning-rate horizon --------------------------------------------------------------

@pytest.mark.parametrize("steps, warmup", [(12, 3), (40, 10), (7, 0), (8, 10), (2, 10)])
def test_schedule_reaches_its_minimum_at_the_last_planned_step(steps, warmup):
    cfg = with_horizon(TINY.replace(warmup_steps=warmup, lr=1.0), start_step=0, steps=steps,
                       total_steps=None)
    lrs = [lr_at(s, cfg.train) for s in range(steps)]
    floor = cfg.train.lr * cfg.train.min_lr_ratio
    used = cfg.train.warmup_steps
    assert used == min(warmup, steps // 2)
    assert lrs[-1] == pytest.approx(floor, abs=1e-15)
    decay = lrs[used - 1:] if used else [1.0, *lrs]  # from the peak down to the floor
    assert decay[0] == pytest.approx(1.0)
    assert all(a > b for a, b in zip(decay, decay[1:], strict=False))  # falls every step
    assert all(x > floor + 1e-9 for x in decay[:-1])  # the floor only at the last step


def test_horizon_comes_from_epochs_and_total_steps_overrides():
    assert planned_steps(None, 3, 5) == 15 and planned_steps(None, None, 5) == 5
    assert planned_steps(7, None, 5) == 7
    assert with_horizon(TINY, start_step=0, steps=15, total_steps=None).train.total_steps == 15
    assert with_horizon(TINY, start_step=0, steps=15, total_steps=99).train.total_steps == 99


def test_warmup_is_capped_at_half_a_short_horizon():
    cfg = with_horizon(TINY.replace(lr=1.0, warmup_steps=10, min_lr_ratio=0.0), start_step=0,
                       steps=8, total_steps=None)
    assert cfg.train.warmup_steps == 4  # in the config every engine reads
    lrs = [lr_at(s, cfg.train) for s in range(8)]
    assert lrs[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])  # 4 warm-up steps, not 10
    assert lrs[5] == pytest.approx(0.5) and lrs[7] == pytest.approx(0.0)


# -- 4. epoch shuffling ------------------------------------------------------------------------

def test_shuffled_order_is_a_permutation_that_differs_across_epochs():
    orders = [group_order(12, e, seed=5, shuffle=True) for e in range(4)]
    for o in orders:
        assert sorted(o.tolist()) == list(range(12))
    assert len({tuple(o) for o in orders}) == 4
    assert group_order(12, 2, seed=5, shuffle=True).tolist() == orders[2].tolist()
    assert group_order(12, 0, seed=6, shuffle=True).tolist() != orders[0].tolist()
    assert group_order(12, 3, seed=5, shuffle=False).tolist() == list(range(12))
    walk = EpochOrder(12, seed=5, shuffle=True)
    assert [walk.at(s)[2] for s in range(24, 36)] == orders[2].tolist()


def test_run_training_visits_every_group_once_per_epoch_in_the_drawn_order():
    cfg = TINY.replace(shuffle=True, seed=3)
    corpus = load_corpus(cfg, None, synthetic_tokens=one_group_tokens(cfg, 5))
    with ReferenceEngine(cfg) as eng:
        plan = TrainPlan(cfg, corpus, steps=planned_steps(None, 2, len(corpus.groups(cfg))))
        s = run_training(plan, eng, say=lambda line: None)
    assert s.groups == [*group_order(5, 0, 3, True), *group_order(5, 1, 3, True)]
    assert s.groups[:5] != s.groups[5:] and s.shuffle_seed == 3


def _train(tmp: Path, name: str, extra: list[str], capsys) -> dict:
    folder, out = tmp / name, tmp / f"{name}.json"
    argv = ["train", "--engine", "fast", "--preset", "tiny", "--synthetic-tokens",
            str(one_group_tokens(TINY, 4) + 700), "--checkpoint-dir", str(folder),
            "--json", str(out), *extra]
    code, _, err = run_cli(argv, capsys)
    assert code == 0, err
    summary = json.loads(out.read_text())
    summary["stderr"] = err
    summary["params"] = load_checkpoint(latest_checkpoint(folder)).state.params
    return summary


def test_same_groups_and_bits_for_every_thread_count(tmp_path, capsys, no_thread_leak):
    runs = [_train(tmp_path, f"t{t}", ["--threads", str(t), "--epochs", "2"], capsys)
            for t in (1, 2, 7)]
    assert runs[0]["groups"][:5] != runs[0]["groups"][5:]  # shuffled, 5 groups per epoch
    for r in runs[1:]:
        assert r["groups"] == runs[0]["groups"]
        assert digest(r["params"]) == digest(runs[0]["params"])


def test_resume_mid_epoch_continues_bitwise(tmp_path, capsys, no_thread_leak):
    common = ["--threads", "2", "--seed", "4"]
    straight = _train(tmp_path, "straight", [*common, "--epochs", "2"], capsys)
    first = _train(tmp_path, "split", [*common, "--steps", "3", "--total-steps", "10"], capsys)
    rest = _train(tmp_path, "split", [*common, "--steps", "7", "--resume",
                                      str(tmp_path / "split")], capsys)
    assert straight["horizon"] == first["horizon"] == rest["horizon"] == 10
    assert first["groups"] + rest["groups"] == straight["groups"]
    assert first["lrs"] + rest["lrs"] == straight["lrs"]
    assert digest(rest["params"]) == digest(straight["params"])
    assert straight["last_group"] == "merge" and straight["shuffle_seed"] == 4
    assert straight["lrs"][-1] == pytest.approx(TINY.train.lr * TINY.train.min_lr_ratio)


def test_resume_keeps_the_checkpoints_horizon(tmp_path, capsys, no_thread_leak):
    _train(tmp_path, "run", ["--threads", "1", "--steps", "3"], capsys)
    more = _train(tmp_path, "run", ["--threads", "1", "--steps", "2", "--resume",
                                    str(tmp_path / "run")], capsys)
    assert more["horizon"] == 3 and more["start_step"] == 3
    assert "steps 4..5 lie past the lr horizon (3)" in more["stderr"]
    floor = TINY.train.lr * TINY.train.min_lr_ratio
    assert more["lrs"] == pytest.approx([floor, floor])


def test_no_shuffle_and_keep_is_the_corpus_order(tmp_path, capsys, no_thread_leak):
    s = _train(tmp_path, "plain", ["--threads", "1", "--epochs", "2", "--no-shuffle",
                                   "--last-group", "keep"], capsys)
    assert s["groups"] == [0, 1, 2, 3, 4, 5] * 2 and s["shuffle_seed"] is None
    assert s["groups_per_epoch"] == 6 and s["last_group"] == "keep"  # merge: 5 (tail 188)


def test_checkpoints_from_before_these_settings_load_as_keep_and_corpus_order():
    old = TINY.to_dict()
    del old["train"]["last_group"], old["train"]["shuffle"]
    cfg = Config.from_dict(old)
    assert cfg.train.last_group == "keep" and cfg.train.shuffle is False


# -- 5. tokens per second over the run ---------------------------------------------------------

def test_tokens_count_every_target_of_short_groups():
    cfg = TINY  # keep: a tail group of a few targets
    corpus = load_corpus(cfg, None, synthetic_tokens=one_group_tokens(cfg, 2) + 3)
    groups = corpus.groups(cfg)
    lines: list[str] = []
    with ReferenceEngine(cfg) as eng:
        plan = TrainPlan(cfg, corpus, steps=planned_steps(None, 1, len(groups)))
        s = run_training(plan, eng, say=lines.append)
    assert s.tokens == sum(int(np.count_nonzero(g.targets)) for g in groups) == 2 * 512 + 3
    assert math.isclose(s.tokens_per_s, s.tokens / s.seconds)
    assert "3 tokens this step" in lines[-1] and "tok/s over the run" in lines[-1]
