"""Checkpoints: bitwise round trips, atomic writes, clear errors on damage (SPEC 5, 6)."""

from __future__ import annotations

import os

import numpy as np
import pytest

import harness.run.checkpoint as checkpoint
from harness.run.checkpoint import (
    CheckpointError,
    checkpoint_path,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from reference.config import preset
from reference.data import Vocab
from reference.engine import ReferenceEngine, TrainState
from reference.optim import lr_at
from reference.params import init_params, param_specs


def _state(dtype, step=5, seed=0) -> TrainState:
    cfg = preset("tiny")
    rng = np.random.default_rng(seed)
    params = {k: v.astype(dtype) for k, v in init_params(cfg.model, seed).items()}
    params["wte"][0, 0] = -0.0  # the sign of zero must survive
    m = {k: rng.normal(size=v.shape).astype(dtype) for k, v in params.items()}
    v = {k: rng.random(size=v.shape).astype(dtype) * 1e-9 for k, v in params.items()}
    return TrainState(params=params, adam_m=m, adam_v=v, step=step)


def _same_bits(a: dict, b: dict) -> None:
    assert list(a) == list(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        assert a[k].tobytes() == b[k].tobytes(), k


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_round_trip_is_bitwise(tmp_path, dtype):
    cfg = preset("tiny", lr=1e-3)
    vocab = Vocab.build(["alpha beta beta, gamma"], cap=cfg.model.vocab_size)
    state = _state(dtype)
    path = save_checkpoint(tmp_path / "step-000005.npz", state, cfg, vocab,
                           extra={"data": "x.txt", "epoch": 1})
    ck = load_checkpoint(path)
    _same_bits(ck.state.params, state.params)
    _same_bits(ck.state.adam_m, state.adam_m)
    _same_bits(ck.state.adam_v, state.adam_v)
    assert list(ck.state.params) == [s.name for s in param_specs(cfg.model)]
    assert np.signbit(ck.state.params["wte"][0, 0])
    assert ck.state.step == 5
    assert ck.config == cfg
    assert ck.vocab == vocab
    assert ck.extra == {"data": "x.txt", "epoch": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-000005.npz"]  # no temp left


def test_checkpoint_without_vocab_or_extra(tmp_path):
    ck = load_checkpoint(save_checkpoint(tmp_path / "c.npz", _state(np.float64), preset("tiny"),
                                         None))
    assert ck.vocab is None and ck.extra == {}


def test_a_failed_write_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    path = tmp_path / "step-000001.npz"
    save_checkpoint(path, _state(np.float64, step=1), preset("tiny"), None)
    before = path.read_bytes()

    def half_write(fh, **arrays):
        fh.write(b"PK\x03\x04 half a zip")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint.np, "savez", half_write)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, _state(np.float64, step=2, seed=1), preset("tiny"), None)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert load_checkpoint(path).state.step == 1
    assert [p.name for p in tmp_path.iterdir()] == ["step-000001.npz"]


def test_missing_file_is_named(tmp_path):
    missing = tmp_path / "step-000009.npz"
    with pytest.raises(CheckpointError) as exc:
        load_checkpoint(missing)
    assert str(missing) in str(exc.value) and "does not exist" in str(exc.value)
    assert exc.value.exit_code == 2


@pytest.mark.parametrize("keep", [0, 100, 0.5])
def test_truncated_file_is_unreadable_not_a_crash(tmp_path, keep):
    path = save_checkpoint(tmp_path / "step-000003.npz", _state(np.float32), preset("tiny"), None)
    raw = path.read_bytes()
    path.write_bytes(raw[:int(len(raw) * keep) if isinstance(keep, float) else keep])
    with pytest.raises(CheckpointError) as exc:
        load_checkpoint(path)
    msg = str(exc.value)
    assert str(path) in msg and "unreadable" in msg and "earlier checkpoint" in msg


def test_changed_array_gives_checksum_mismatch(tmp_path):
    path = save_checkpoint(tmp_path / "step-000004.npz", _state(np.float64), preset("tiny"), None)
    with np.load(path) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["param/h.0.attn.w_o"] = arrays["param/h.0.attn.w_o"].copy()
    arrays["param/h.0.attn.w_o"][1, 2] += 1e-12  # one weight, one tiny change; checksum kept
    np.savez(path, **arrays)
    with pytest.raises(CheckpointError) as exc:
        load_checkpoint(path)
    assert str(exc.value) == (f"checkpoint {path} is corrupted: checksum mismatch; delete it or "
                              "resume from an earlier checkpoint")


def test_flipped_byte_on_disk_is_detected(tmp_path):
    path = save_checkpoint(tmp_path / "step-000004.npz", _state(np.float64), preset("tiny"), None)
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x40  # inside the stored array bytes
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match=r"corrupted|unreadable"):
        load_checkpoint(path)


def test_npz_not_written_by_us_is_refused(tmp_path):
    path = tmp_path / "other.npz"
    np.savez(path, x=np.ones(3))
    with pytest.raises(CheckpointError, match="no 'checksum' entry"):
        load_checkpoint(path)


def test_latest_checkpoint_picks_the_highest_step(tmp_path):
    assert latest_checkpoint(tmp_path) is None
    assert latest_checkpoint(tmp_path / "absent") is None
    for name in ("step-000002.npz", "step-000010.npz", "step-000009.npz", "other.npz",
                 ".step-000099.npz.abc.tmp", "step-000050.npz.tmp"):
        (tmp_path / name).write_bytes(b"")
    os.utime(tmp_path / "step-000002.npz")  # the newest file is not the highest step
    assert latest_checkpoint(tmp_path) == tmp_path / "step-000010.npz"
    assert checkpoint_path(tmp_path, 12) == tmp_path / "step-000012.npz"


def test_resume_continues_bitwise(tmp_path):
    """Two steps, checkpoint, reload into a fresh engine, one step == three steps straight."""
    cfg = preset("tiny", warmup_steps=2, lr=1e-2)
    rng = np.random.default_rng(5)
    groups = [rng.integers(4, cfg.model.vocab_size, size=(8, 17)) for _ in range(3)]
    straight = ReferenceEngine(cfg)
    for g in groups:
        straight.step(g[:, :-1], g[:, 1:])

    first = ReferenceEngine(cfg)
    for g in groups[:2]:
        first.step(g[:, :-1], g[:, 1:])
    path = save_checkpoint(checkpoint_path(tmp_path, 2), first.state(), cfg, None)
    ck = load_checkpoint(latest_checkpoint(tmp_path))
    resumed = ReferenceEngine(ck.config)
    resumed.load_state(ck.state)
    last = resumed.step(groups[2][:, :-1], groups[2][:, 1:])
    assert path.exists() and last.lr == lr_at(2, cfg.train)
    _same_bits(resumed.state().params, straight.state().params)
    _same_bits(resumed.state().adam_m, straight.state().adam_m)
    _same_bits(resumed.state().adam_v, straight.state().adam_v)
    assert resumed.state().step == straight.state().step == 3
