"""The report's PNGs: valid files that read back as non-blank images; empty input is refused."""

from __future__ import annotations

import matplotlib.image as mpimg
import numpy as np
import pytest

from harness.figures import plots

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

CASES = {
    "throughput": lambda out: plots.plot_throughput([1, 2, 4, 63], [900.0, 1750.0, 1760.0,
                                                                   1700.0], out, cores=2),
    "thread_cpu": lambda out: plots.plot_thread_cpu(
        {"ks-node-zero": 0.2, "ks-worker-0": 9.5, "ks-worker-1": 9.1}, out, wall_seconds=10.0),
    "memory": lambda out: plots.plot_memory([0.0, 0.25, 0.5, 0.75], [3e8, 6e8, 6.2e8, 4e8],
                                            out, limit_bytes=1.32e9),
    "equivalence": lambda out: plots.plot_equivalence([1, 2, 12, 63], [0.0, 0.0, 3e-7, 1e-6],
                                                      out, tolerance=1e-4),
    "loss": lambda out: plots.plot_loss(list(range(20)), list(np.linspace(6.6, 4.0, 20)), out),
}


def _assert_png(path, expected):
    assert path == expected
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    image = mpimg.imread(path)
    height, width = image.shape[:2]
    assert height > 100 and width > 100
    # not a blank canvas: a plot has lines and text in several colours
    assert len(np.unique(image.reshape(-1, image.shape[-1]), axis=0)) > 10


@pytest.mark.parametrize("kind", sorted(CASES))
def test_each_plot_writes_a_readable_png(tmp_path, kind):
    out = tmp_path / "sub" / f"{kind}.png"
    path = CASES[kind](out)
    _assert_png(path, out)


def test_equivalence_plot_accepts_all_zero_errors(tmp_path):
    out = tmp_path / "eq.png"
    _assert_png(plots.plot_equivalence([1, 2, 3], [0.0, 0.0, 0.0], out, tolerance=1e-10), out)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda out: plots.plot_throughput([], [], out), "threads is empty"),
        (lambda out: plots.plot_thread_cpu({}, out), "cpu_seconds is empty"),
        (lambda out: plots.plot_memory([], [], out), "times is empty"),
        (lambda out: plots.plot_equivalence([], [], out, tolerance=1e-4), "threads is empty"),
        (lambda out: plots.plot_loss([], [], out), "steps is empty"),
        (lambda out: plots.plot_loss([1, 2], [3.0], out), "one y per x"),
        (lambda out: plots.plot_loss([1, 2], [3.0, float("nan")], out), "NaN"),
        (lambda out: plots.plot_equivalence([1], [1e-3], out, tolerance=0.0), "tolerance"),
        (lambda out: plots.plot_equivalence([1], [-1.0], out, tolerance=1e-4), ">= 0"),
    ],
)
def test_bad_input_is_refused_with_a_clear_error(tmp_path, call, message):
    out = tmp_path / "never.png"
    with pytest.raises(ValueError, match=message):
        call(out)
    assert not out.exists()


def test_utilisation_plot_is_a_png_and_rejects_bad_input(tmp_path):
    from harness.figures.plots import plot_utilisation

    out = plot_utilisation([0.0, 0.5, 1.0], [0.2, 0.9, 1.0], tmp_path / "u.png")
    assert out.read_bytes().startswith(b"\x89PNG\r\n\x1a\n") and out.stat().st_size > 1000
    with pytest.raises(ValueError, match="cpu_use"):
        plot_utilisation([0.0, 1.0], [0.5], tmp_path / "bad.png")


def test_loss_plot_takes_the_heldout_series_and_rejects_a_mismatch(tmp_path):
    from harness.figures.plots import plot_loss

    path = plot_loss([1, 2, 3], [4.0, 3.5, 3.2], tmp_path / "loss.png", eval_steps=[2, 3],
                     eval_losses=[3.9, 3.6])
    assert path.read_bytes().startswith(b"\x89PNG")
    with pytest.raises(ValueError, match="eval_losses"):
        plot_loss([1, 2], [4.0, 3.5], tmp_path / "bad.png", eval_steps=[2], eval_losses=[])
