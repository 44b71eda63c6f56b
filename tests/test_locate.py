"""Locating a failed gate: the first fold of a bitwise failure, the first layer of a tolerance one.

Breakers as in tests/test_breakers.py (monkeypatched fast/ code): one ulp added to one batch's
gradient, only at T = 3, must be located to that step, batch, position, sphere, tensor, index and
1 ulp; one layer's weight gradient off by 1% must be located to that layer.
"""

from __future__ import annotations

import threading
import xml.etree.ElementTree as ET

import numpy as np
import pytest

import fast.workers as fw
from fast.model import FastModel
from fast.record import FOLD, SUM, UPDATE_CHUNK, FoldDigests, digest64
from fast.trainer import FastTrainer
from fast.workers import Worker
from harness.cli import main
from harness.verify.divergence import first_difference, tensor_at, ulps
from harness.verify.gates import _Reference, digest, run_verify, verify_one
from harness.verify.junit import junit_xml
from reference.config import preset
from reference.params import flat_offsets, param_specs

G = 26  # positions 0 and 1 fold three batches, the others two: batch 17 is position 5, sphere 1
CFG = preset("tiny").replace(group_size=G)
BATCH, TENSOR = 17, "h.1.mlp.w_fc"


@pytest.fixture(scope="module")
def ref():
    return _Reference(CFG, 2)


@pytest.fixture(scope="module")
def surviving_index(ref):
    """A flat index of TENSOR where one float32 ulp on batch 17's fold still changes the summed
    gradient (most single-ulp changes are rounded away by the 12-segment sum): found by redoing
    the sum of reduce_chunk (float64, position order, one division) on T=1's segments."""
    first = ref.groups[0]
    with FastTrainer(CFG, 1, np.float32) as t:
        res = t.group_grads(first.tokens, first.targets)
        seg = t.shared.segments.data.copy()

    def total(s):
        acc = s[0].astype(np.float64)
        for p in range(1, 12):
            acc += s[p]
        return (acc / res.n_targets).astype(np.float32)

    before = total(seg)
    lo, hi = flat_offsets(CFG.model)[TENSOR]
    for i in range(lo, hi):
        bent = seg.copy()
        bent[BATCH % 12, i] = np.nextafter(bent[BATCH % 12, i], np.float32(np.inf))
        if total(bent)[i] != before[i]:
            return i
    pytest.fail(f"no element of {TENSOR} keeps a one-ulp change through the sum")


def _one_ulp_at_t3(mp: pytest.MonkeyPatch, index: int) -> None:
    """One ulp added to element `index` of position 5's segment by batch 17's fold, only when
    T = 3."""
    local = threading.local()
    orig_batch, orig_position = Worker.run_batch, fw.position_of
    orig_fold = fw.fold_into

    def run_batch(self, job, k, b):
        local.threads = self.shared.n_workers
        return orig_batch(self, job, k, b)

    def position_of(b):
        local.batch = b
        return orig_position(b)

    def fold(segment, buffer):  # batch 17 folds its own buffer into position 5's segment
        out = orig_fold(segment, buffer)
        if local.threads == 3 and local.batch == BATCH:
            segment[index] = np.nextafter(segment[index], np.inf)
        return out

    mp.setattr(Worker, "run_batch", run_batch)
    mp.setattr(fw, "position_of", position_of)
    mp.setattr(fw, "fold_into", fold)


@pytest.mark.parametrize("locate", [False, True], ids=["repeated", "--locate"])
def test_one_ulp_at_t3_is_located_to_its_batch(surviving_index, locate, no_thread_leak):
    with pytest.MonkeyPatch.context() as mp:
        _one_ulp_at_t3(mp, surviving_index)
        report = run_verify([CFG], ["float32"], [1, 3], trajectory_steps=2,
                            out=lambda line: None, locate=locate)
    failures = report.records[1].failures
    assert failures and failures[0].startswith("bitwise-grads:"), failures
    name = tensor_at(CFG, surviving_index)
    assert name.startswith(TENSOR + "[")
    assert (f"located: step 1 (the gradient of group 0), fold of batch {BATCH} into position "
            f"{BATCH % 12} as sphere {BATCH // 12}: {name} (flat {surviving_index}): "
            "T=1 ") in failures[0], failures[0]
    assert "1 ulp (1 element of that partial sum differs)" in failures[0], failures[0]
    root = ET.fromstring(junit_xml(report))  # --junit carries it in the failure message
    messages = [f.get("message") for f in root.iter("failure")]
    assert any(f"fold of batch {BATCH} into position {BATCH % 12}" in m for m in messages)


def test_update_difference_is_located_to_the_update(ref, no_thread_leak):
    """Same folds and sums, weights one ulp apart after the update: located to the update."""
    local = threading.local()
    with pytest.MonkeyPatch.context() as mp:
        orig_update, orig_apply = Worker.update, fw.apply_chunk

        def update(self, job):
            local.threads = self.shared.n_workers
            orig_update(self, job)

        def apply_chunk(params, total, m, v, decay, lo, hi, scalars, train):
            orig_apply(params, total, m, v, decay, lo, hi, scalars, train)
            if local.threads == 3 and lo == 0:  # AdamW one ulp off on weight 0, only at T=3
                params[0] = np.nextafter(params[0], np.inf)
        mp.setattr(Worker, "update", update)
        mp.setattr(fw, "apply_chunk", apply_chunk)
        report = run_verify([CFG], ["float64"], [1, 3], trajectory_steps=2,
                            out=lambda line: None)
    first = report.records[1].failures[0]
    assert first.startswith("bitwise-update:"), first
    assert "located: step 2 (training step 1), update, chunk 0: wte[0, 0] (flat 0)" in first
    assert "1 ulp" in first


def test_sum_difference_is_located_to_the_sum(no_thread_leak):
    """The summed gradient one ulp off after the reduction (tests/test_breakers.py's
    bitwise-grads breaker, at T=3): every fold agrees, the sum's chunk 0 does not."""
    with pytest.MonkeyPatch.context() as mp:
        orig = Worker.reduce

        def reduce(self, job):
            orig(self, job)
            if self.shared.n_workers == 3 and self.index == 0:
                self.shared.total[0] = np.nextafter(self.shared.total[0], np.inf)
        mp.setattr(Worker, "reduce", reduce)
        report = run_verify([CFG], ["float64"], [1, 3], trajectory_steps=2,
                            out=lambda line: None)
    first = report.records[1].failures[0]
    assert first.startswith("bitwise-grads:"), first
    assert ("located: step 1 (the gradient of group 0), sum of the 12 position segments, "
            "chunk 0: wte[0, 0] (flat 0): T=1 ") in first, first
    assert "1 ulp (1 element" in first, first


def _one_layer_off(mp: pytest.MonkeyPatch) -> None:
    """Every batch's gradient of one layer's weights comes out 1% large."""
    lo, hi = flat_offsets(CFG.model)[TENSOR]
    orig = fw.batch_forward_backward

    def fb(model, params, segment, *rest, **kw):
        out = orig(model, params, segment, *rest, **kw)
        segment[lo:hi] *= 1.01
        return out
    mp.setattr(fw, "batch_forward_backward", fb)


def test_gradient_break_is_located_to_its_layer(ref, no_thread_leak):
    """Forward activations all agree: the first gradient off, in backward order, is named."""
    with pytest.MonkeyPatch.context() as mp:
        _one_layer_off(mp)
        rec = verify_one(CFG, "float64", 2, ref, stall_timeout=20.0)
    grad = [f for f in rec.failures if f.startswith("grad-equivalence:")]
    assert grad, rec.failures
    assert (f"located (gradients in backward order): layer h.1, tensor {TENSOR}: relative L2 "
            in grad[0]), grad[0]


def test_weight_break_is_located_to_its_layer_forward(ref, no_thread_leak):
    """Layer 1's MLP weights 1% off in the fast engine: every gradient is off, but the forward
    first leaves the reference at layer 1's MLP hidden values, and that is what is named."""
    lo, hi = flat_offsets(CFG.model)[TENSOR]
    orig = FastModel.flatten

    def flatten(self, params):
        flat = orig(self, params)
        flat[lo:hi] *= 1.01
        return flat
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(FastModel, "flatten", flatten)
        rec = verify_one(CFG, "float32", 2, ref, stall_timeout=20.0)
    grad = [f for f in rec.failures if f.startswith("grad-equivalence:")]
    assert grad, rec.failures
    assert ("located (forward activations, batch 0): layer h.1, h.1.mlp output: relative L2 "
            in grad[0]), grad[0]


def test_digests_cover_the_tree_and_change_no_bit(ref, no_thread_leak):
    names = [s.name for s in param_specs(CFG.model)]
    hashes, digests = [], None
    for locate in (False, True):
        with FastTrainer(CFG, 3, np.float32, locate=locate) as t:
            first = ref.groups[0]
            res = t.group_grads(first.tokens, first.targets)
            t.step(first.tokens, first.targets)
            hashes.append((digest(res.grads, names), digest(t.state().params, names)))
            digests = t.record.digests
    assert hashes[0] == hashes[1]
    keys = digests.ordered()
    n_chunks = len(t.shared.chunks)
    assert [k for k in keys if k[0] == 1] == (
        [(1, FOLD, b) for b in range(G)] + [(1, SUM, c) for c in range(n_chunks)])
    assert [k for k in keys if k[0] == 2][-n_chunks:] == [(2, UPDATE_CHUNK, c)
                                                           for c in range(n_chunks)]
    assert digests.where[(1, FOLD, BATCH)] == (BATCH % 12, BATCH // 12)


def test_first_difference_and_ulps():
    a, b = FoldDigests(), FoldDigests()
    x = np.arange(4, dtype=np.float32)
    for d in (a, b):
        d.note((1, FOLD, 0), x)
        d.note((1, SUM, 0), x)
    b.note((1, FOLD, 3), x + 1)
    a.note((1, FOLD, 3), x)
    assert first_difference(a, b) == (1, FOLD, 3)
    assert first_difference(a, a) is None
    assert digest64(x) != digest64(x + 1)
    one = np.float32(1.0)
    assert ulps(one, np.nextafter(one, np.float32(2))) == 1
    assert ulps(np.float64(-0.0), np.float64(0.0)) == 0
    tiny = np.nextafter(np.float64(0), 1)
    assert ulps(-tiny, tiny) == 2


def test_verify_locate_option_passes_a_healthy_engine(capsys, no_thread_leak):
    code = main(["verify", "--locate", "--presets", "tiny", "--threads", "1,3", "--dtypes",
                 "float32", "--trajectory-steps", "2", "--quiet"])
    assert code == 0, capsys.readouterr()
