"""`--trace`: a valid Chrome Trace Event file with one track per thread, every phase, consistent
times and every batch once per step; a bounded size on long runs; the Gantt PNG is an image."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pytest
from support import run_cli

from fast.record import (
    BACKWARD,
    BATCH,
    DECIDE,
    FORWARD,
    NESTED,
    REDUCE,
    UPDATE,
    Recorder,
    wait_kind,
)
from harness.measure.timeline import plot_gantt
from harness.measure.trace import TracePolicy, trace_events

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
THREADS, STEPS, G = 3, 3, 8  # tiny preset: G = 8 batches per step


@pytest.fixture(scope="module")
def train_trace(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("trace")
    path = tmp / "run.json"
    from harness.cli import main

    code = main(["train", "--preset", "tiny", "--threads", str(THREADS), "--steps", str(STEPS),
                 "--checkpoint-dir", str(tmp / "ckpt"), "--trace", str(path)])
    assert code == 0
    return json.loads(path.read_text())


def _spans(trace: dict) -> list[dict]:
    return [e for e in trace["traceEvents"] if e["ph"] == "X"]


def test_trace_is_trace_event_format(train_trace, no_thread_leak):
    events = train_trace["traceEvents"]
    assert events and train_trace["displayTimeUnit"] == "ms"
    for e in events:
        assert e["ph"] in {"M", "X", "C"}, e
        assert isinstance(e["pid"], int) and isinstance(e["name"], str)
        if e["ph"] == "X":
            assert isinstance(e["tid"], int)
            assert e["ts"] >= 0 and e["dur"] >= 0, e
        if e["ph"] == "C":
            assert all(isinstance(v, float) for v in e["args"].values())


def test_one_track_per_thread(train_trace):
    names = {e["tid"]: e["args"]["name"] for e in train_trace["traceEvents"]
             if e["ph"] == "M" and e["name"] == "thread_name"}
    expected = {"ks-node-zero", *(f"ks-worker-{i}" for i in range(THREADS))}
    assert expected <= set(names.values())
    assert names[0] == "ks-node-zero"
    assert len(set(names.values())) == len(names)  # one tid per thread


def test_every_phase_and_counter_is_there(train_trace):
    by_thread = defaultdict(set)
    tids = {e["tid"]: e["args"]["name"] for e in train_trace["traceEvents"]
            if e["ph"] == "M" and e["name"] == "thread_name"}
    for e in _spans(train_trace):
        by_thread[tids[e["tid"]]].add(e["cat"])
    for barrier in ("point-A", "reduced", "decided", "point-B"):
        assert wait_kind(barrier) in by_thread["ks-node-zero"]
        assert wait_kind(barrier) in by_thread["ks-worker-0"]
    assert {DECIDE, "dispatching", "step"} <= by_thread["ks-node-zero"]
    assert BATCH not in by_thread["ks-node-zero"]
    assert {BATCH, REDUCE, UPDATE} <= by_thread["ks-worker-0"]
    assert any("checkpoint write" in cats for cats in by_thread.values())
    counters = {e["name"] for e in train_trace["traceEvents"] if e["ph"] == "C"}
    assert {"tokens/s", "RSS MB"} <= counters


def test_spans_of_a_thread_never_overlap(train_trace):
    per_tid = defaultdict(list)
    for e in _spans(train_trace):
        # Node Zero's whole-step span contains its phases; forward/backward nest in their batch
        if e["cat"] != "step" and e["cat"] not in NESTED:
            per_tid[e["tid"]].append((e["ts"], e["ts"] + e["dur"], e["name"]))
    for tid, spans in per_tid.items():
        spans.sort()
        for (_, end, a), (start, _, b) in zip(spans, spans[1:], strict=False):
            assert start >= end - 1e-3, f"tid {tid}: {b} starts inside {a}"


def test_forward_and_backward_lie_inside_their_batch(train_trace):
    """Each batch span holds, per micro-batch, a forward then a backward span, in order."""
    batches, inner = {}, defaultdict(list)
    for e in _spans(train_trace):
        if e["cat"] != BATCH and e["cat"] not in NESTED:
            continue
        key = (e["tid"], e["args"]["step"], e["args"]["batch"])
        if e["cat"] == BATCH:
            batches[key] = (e["ts"], e["ts"] + e["dur"])
        elif e["cat"] in NESTED:
            inner[key].append((e["ts"], e["ts"] + e["dur"], e["cat"]))
    assert batches and set(inner) == set(batches)
    for key, spans in inner.items():
        lo, hi = batches[key]
        spans.sort()
        assert [k for *_, k in spans] == [FORWARD, BACKWARD] * (len(spans) // 2), key
        # ts and dur are each rounded to 1e-3 us, so an end (ts + dur) carries two roundings
        eps = 2e-3
        assert all(lo - eps <= a <= b <= hi + eps for a, b, _ in spans), key
        assert all(b <= c + eps for (_, b, _), (c, _, _) in zip(spans, spans[1:], strict=False))


def test_every_batch_once_per_step(train_trace):
    per_step = defaultdict(list)
    for e in _spans(train_trace):
        if e["cat"] == BATCH:
            per_step[e["args"]["step"]].append(e["args"]["batch"])
            assert e["args"]["position"] == e["args"]["batch"] % 12
    assert len(per_step) == STEPS
    for step, batches in per_step.items():
        assert sorted(batches) == list(range(G)), step


def _long_record(steps: int) -> Recorder:
    rec = Recorder()
    log = rec.register("ks-worker-0", "worker", 0, 0)
    t = 0.0
    for step in range(1, steps + 1):
        for b in range(4):
            log.span(BATCH, step, t, t + 0.001, b)
            log.fold(step, b, b, 0)
            t += 0.001
    return rec


def test_long_runs_are_sampled_by_the_documented_policy():
    policy = TracePolicy(full_steps=5, every=10, max_bytes=10**9)
    trace = trace_events(_long_record(100).snapshot(), policy=policy)
    steps = sorted({e["args"]["step"] for e in trace["traceEvents"] if e["ph"] == "X"})
    assert steps == [1, 2, 3, 4, 5, 6, 16, 26, 36, 46, 56, 66, 76, 86, 96]
    assert trace["otherData"]["steps_kept"] == len(steps)
    assert trace["otherData"]["steps_dropped"] == 100 - len(steps)


def test_byte_cap_bounds_the_file():
    cap = 20_000
    trace = trace_events(_long_record(500).snapshot(),
                         policy=TracePolicy(full_steps=500, every=1, max_bytes=cap))
    assert len(json.dumps(trace)) < cap + 2_000  # the cap, plus the small otherData block
    assert trace["otherData"]["steps_dropped"] > 0


def test_gantt_png_is_an_image(tmp_path: Path):
    rec = _long_record(3).snapshot()
    out = plot_gantt(rec, 2, tmp_path / "timeline.png")
    data = out.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 1000
    with pytest.raises(ValueError, match="no span of step 99"):
        plot_gantt(rec, 99, tmp_path / "none.png")


def test_verify_trace_has_one_process_per_run(tmp_path: Path, capsys, no_thread_leak):
    path = tmp_path / "verify.json"
    code, _, _ = run_cli(["verify", "--threads", "1,2", "--presets", "tiny", "--dtypes",
                          "float32", "--trajectory-steps", "2", "--trace", str(path)], capsys)
    assert code == 0
    events = json.loads(path.read_text())["traceEvents"]
    processes = {e["pid"]: e["args"]["name"] for e in events
                 if e["ph"] == "M" and e["name"] == "process_name"}
    assert processes == {0: "tiny float32 T=1", 1: "tiny float32 T=2"}


def test_trace_needs_the_fast_engine(tmp_path: Path, capsys):
    code, _, err = run_cli(["train", "--engine", "reference", "--steps", "1",
                            "--trace", str(tmp_path / "t.json")], capsys)
    assert code == 2 and "--engine fast" in err
    assert not (tmp_path / "t.json").exists()


def test_long_runs_keep_a_bounded_record(no_thread_leak):
    """The engine's record retains the first 20 steps and every 10th: memory stays bounded,
    and what is kept still passes every finding."""
    from fast.trainer import FastTrainer
    from harness.measure import evidence
    from harness.run.corpus import load_corpus, one_group_tokens
    from reference.config import preset

    cfg = preset("tiny")
    group = load_corpus(cfg, None, synthetic_tokens=one_group_tokens(cfg, 1)).groups(cfg).group(0)
    with FastTrainer(cfg, 2) as trainer:
        for _ in range(32):
            trainer.step(group.tokens, group.targets)
    rec = trainer.record.snapshot()
    assert rec.steps() == [*range(1, 22), 31, 32]  # 31, 32: the last two are not pruned yet
    assert rec.dropped_steps == 9
    for name, finding in evidence.RECORD_FINDINGS.items():
        assert finding(rec).passed, name


def test_micro_spans_map_the_kernel_marks_onto_the_call():
    """Cycle marks (start, fwd end, bwd end per micro-batch) land linearly between the call's
    own boundaries, in order; counters that disagree across cores are kept inside them."""
    rec = Recorder()
    log = rec.register("ks-worker-0", "worker", 0, 0)
    log.micro_spans(1, 4, [100, 130, 200, 230, 300], 10.0, 12.0)
    expected = [(FORWARD, 10.0, 10.3), (BACKWARD, 10.3, 11.0), (FORWARD, 11.0, 11.3),
                (BACKWARD, 11.3, 12.0)]
    assert [k for k, *_ in log.spans] == [k for k, *_ in expected]
    assert [t for _, _, s, e, _ in log.spans for t in (s, e)] == pytest.approx(
        [t for _, s, e in expected for t in (s, e)])
    assert {(step, batch) for _, step, _, _, batch in log.spans} == {(1, 4)}
    skewed = rec.register("ks-worker-1", "worker", 1, 1)
    skewed.micro_spans(1, 5, [100, 90, 300], 0.0, 1.0)  # a mark behind the start
    (_, _, f0, f1, _), (_, _, b0, b1, _) = skewed.spans
    assert 0.0 <= f0 <= f1 <= b0 <= b1 <= 1.0
