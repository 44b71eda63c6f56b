"""`--data` hygiene through the real CLI (issue #10): hidden entries, links, FIFOs, unreadable and
binary files are skipped, counted and summarised in a few lines; non-regular --data paths and
pathological JSON are refused with exit 2; the stream uses the smallest integer type."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from harness.run.corpus import load_corpus
from reference.config import preset
from reference.data import stream_dtype

ROOT = Path(__file__).resolve().parents[1]


def _unprivileged_prefix() -> list[str]:
    """Root reads every file: run it without the DAC-override capabilities (util-linux
    setpriv), so a mode-000 file really is unreadable. Other users need nothing."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: cannot make a file unreadable")
    return [setpriv, "--bounding-set", "-dac_override,-dac_read_search"]


def spheres(*argv: str, unprivileged: bool = False, timeout: float = 60.0
            ) -> subprocess.CompletedProcess:
    prefix = _unprivileged_prefix() if unprivileged else []
    return subprocess.run([*prefix, sys.executable, "-m", "harness", *argv],
                          capture_output=True, text=True, cwd=ROOT, timeout=timeout)


@pytest.fixture
def messy_folder():
    """A folder every user can enter (pytest's tmp_path is private to root)."""
    top = Path(tempfile.mkdtemp(prefix="ks-data-"))
    top.chmod(0o755)
    (top / "a.txt").write_text("alpha beta gamma\n")
    (top / "sub").mkdir()
    (top / "sub" / "b.txt").write_text("beta delta\n")
    (top / ".git").mkdir()
    (top / ".git" / "config").write_text("secret words\n")
    (top / ".hidden.txt").write_text("hidden words\n")
    (top / "link.txt").symlink_to(top / "a.txt")
    (top / "linkdir").symlink_to(top / "sub")
    (top / "dangling").symlink_to(top / "nowhere")
    os.mkfifo(top / "pipe")
    (top / "blob.bin").write_bytes(b"\x00\x01binary")
    (top / "secret.txt").write_text("locked words\n")
    (top / "secret.txt").chmod(0o000)
    for p in (top / "sub", top / ".git"):
        p.chmod(0o755)
    for p in (top / "a.txt", top / "sub" / "b.txt", top / "blob.bin"):
        p.chmod(0o644)
    yield top
    shutil.rmtree(top)


def _tokens(stderr: str) -> int:
    return int(re.search(r": ([\d,]+) tokens, vocabulary", stderr).group(1).replace(",", ""))


def test_folder_skips_are_counted_and_summarised(messy_folder):
    r = spheres("train", "--engine", "reference", "--steps", "0", "--data", str(messy_folder),
                unprivileged=True)
    assert r.returncode == 0, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("data:")]
    summary = "\n".join(lines)
    assert "skipped 8 entries" in summary
    for needle in ("2 hidden", "3 symbolic link", "1 not a regular file", "1 binary",
                   "1 unreadable"):
        assert needle in summary, summary
    assert len(lines) <= 8  # a few lines, not one per file
    # only a.txt and sub/b.txt are trained on: 3 + 2 words, each document ends with <eos>
    assert _tokens(r.stderr) == 7
    assert "Traceback" not in r.stderr and "Warning" not in r.stderr

    verbose = spheres("train", "--engine", "reference", "--steps", "0", "--data",
                      str(messy_folder), "--verbose", unprivileged=True)
    assert verbose.returncode == 0
    for name in (".git", ".hidden.txt", "link.txt", "linkdir", "dangling", "pipe", "blob.bin",
                 "secret.txt"):
        assert str(messy_folder / name) in verbose.stderr


@pytest.mark.parametrize("path_kind", ["fifo", "device"])
def test_non_regular_data_path_is_refused_up_front(path_kind, tmp_path):
    if path_kind == "fifo":
        path = tmp_path / "pipe"
        os.mkfifo(path)
    else:
        path = Path("/dev/zero")
    r = spheres("train", "--engine", "reference", "--steps", "0", "--data", str(path),
                timeout=30)
    assert r.returncode == 2, r.stderr
    assert "not a regular file or folder" in r.stderr and str(path) in r.stderr


@pytest.mark.parametrize("content, needle", [
    ("[" * 200_000 + "]" * 200_000, "nests JSON too deeply"),
    ('{"data": [{"n": ' + "9" * 5000 + "}]}", "not usable JSON"),
])
def test_pathological_squad_is_exit_2(content, needle, tmp_path):
    squad = tmp_path / "squad.json"
    squad.write_text(content)
    r = spheres("train", "--engine", "reference", "--steps", "0", "--data", str(squad))
    assert r.returncode == 2, r.stderr
    assert needle in r.stderr and "Traceback" not in r.stderr


def test_stream_uses_the_smallest_integer_type(tmp_path):
    assert stream_dtype(64) == np.uint8 and stream_dtype(788) == np.uint16
    assert stream_dtype(70_000) == np.uint32
    (tmp_path / "a.txt").write_text(" ".join(f"w{i}" for i in range(300)) * 3)
    corpus = load_corpus(preset("small"), tmp_path)  # 304 ids -> uint16
    assert corpus.stream.dtype == np.uint16
    ids = corpus.vocab.encode((tmp_path / "a.txt").read_text())
    assert np.array_equal(corpus.stream[:-1].astype(np.int64), ids)
    group = corpus.groups(preset("small")).group(0)
    assert group.tokens.dtype == np.int64  # batches are int64 whatever the stream's type
