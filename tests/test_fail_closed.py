"""A gate that fails closed, inputs taken for what they are, sane timeouts (#24 classes 2, 4,
#20 classes 4, 5): each case as a user meets it, through the real command line."""

from __future__ import annotations

import pytest
from support import run_cli


@pytest.mark.parametrize("argv", [
    ["verify", "--stall-timeout", "0.001"],
    ["train", "--stall-timeout", "0.5"],
    ["analyze", "--stall-timeout", "0.2"],
    ["grads", "--stall-timeout", "0.01", "--out", "g.npz"],
    ["engines", "--measure", "--stall-timeout", "0.5"],
    ["train", "--progress-seconds", "0.001"],
])
def test_a_timeout_below_its_floor_is_refused_with_the_reason(argv, capsys, tmp_path,
                                                             monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(argv, capsys)
    assert code == 2 and "must be at least" in err
    assert list(tmp_path.iterdir()) == []  # refused before any work


def test_grads_takes_a_stall_timeout_and_passes_it_to_the_engine(tmp_path, capsys, monkeypatch):
    import harness.commands.grads as grads

    seen = {}
    real = grads.make_engine

    def spy(*args, **kw):
        seen.update(kw)
        return real(*args, **kw)

    monkeypatch.setattr(grads, "make_engine", spy)
    code, out, err = run_cli(["grads", "--stall-timeout", "7", "--out",
                              str(tmp_path / "g.npz")], capsys)
    assert code == 0, err
    assert seen["stall_timeout"] == 7.0
