"""Before/after loss curves for issue 14 on one corpus (python benchmarks/training_quality.py).

"before" is main's behaviour (`--last-group keep --no-shuffle --total-steps 1000`), "after" the
new defaults (merge, shuffled epochs, lr horizon = the planned run). Both train the same preset,
seed, corpus and epochs through the real `spheres train`; then each final checkpoint is scored
on the whole training corpus and on a held-out corpus (every target, no update, the fast engine
at float32). Writes results-<N>ep.json and loss-curves-<N>ep.png into --out (default
reports/training-quality/, whose README shows them).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "reports" / "training-quality"  # where the figures and the README live
sys.path.insert(0, str(ROOT))  # this tree's code, also when another checkout is installed

from fast.trainer import FastTrainer  # noqa: E402
from harness.run.checkpoint import latest_checkpoint, load_checkpoint  # noqa: E402
from harness.run.corpus import load_corpus  # noqa: E402

PRESET, THREADS, SEED = "small", 2, 0
EPOCHS = 10  # set by --epochs
MAIN = ["--last-group", "keep", "--no-shuffle", "--total-steps", "1000"]  # main's behaviour
VARIANTS = {  # name: extra arguments; "before" and "after" are plotted, the rest are ablations
    "before": MAIN,
    "after": [],
    "merge+shuffle, horizon 1000": ["--total-steps", "1000"],
    "before, lr 1e-3": [*MAIN, "--lr", "1e-3"],
    "after, lr 1e-3": ["--lr", "1e-3"],
}
PLOTTED = {"before": "tab:red", "after": "tab:blue", "before, lr 1e-3": "tab:orange",
           "after, lr 1e-3": "tab:cyan"}


def stdlib_folder(package: str) -> str:
    mod = __import__(package)
    return os.path.dirname(mod.__file__)


def train(name: str, extra: list[str], data: str, work: Path) -> dict:
    tag = "".join(ch if ch.isalnum() else "-" for ch in name)
    out, ckpt = work / f"{tag}.json", work / tag
    cmd = [sys.executable, "-m", "harness", "train", "--preset", PRESET, "--data", data,
           "--epochs", str(EPOCHS), "--threads", str(THREADS), "--seed", str(SEED),
           "--checkpoint-dir", str(ckpt), "--json", str(out), *extra]
    print(" ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT, stderr=subprocess.DEVNULL)
    summary = json.loads(out.read_text())
    summary["checkpoint"] = str(latest_checkpoint(ckpt))
    summary["command"] = "spheres " + " ".join(cmd[3:]).replace(str(work) + "/", "")
    return summary


def corpus_loss(checkpoint: str, data: str) -> float:
    """Token-weighted loss of the checkpoint's weights over every target of `data`."""
    ck = load_checkpoint(checkpoint)
    cfg = ck.config.replace(last_group="keep", shuffle=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # __pycache__ binaries are skipped with a warning
        corpus = load_corpus(cfg, data, vocab=ck.vocab)
    total = count = 0.0
    with FastTrainer(cfg, THREADS, params=ck.state.params) as tr:
        for group in corpus.groups(cfg):
            r = tr.group_grads(group.tokens, group.targets)
            total += r.loss * r.n_targets
            count += r.n_targets
    return total / count


def epoch_means(s: dict) -> list[float]:
    """Token-weighted mean training loss of each epoch (every step of the epoch)."""
    per = s["groups_per_epoch"]
    losses, n = np.array(s["losses"]), np.array(s["step_targets"], dtype=np.float64)
    return [float(np.average(losses[e * per:(e + 1) * per], weights=n[e * per:(e + 1) * per]))
            for e in range(len(losses) // per)]


def plot(results: dict, path: Path) -> None:
    fig = Figure(figsize=(11, 7.5), dpi=100)
    FigureCanvasAgg(fig)
    ax_loss, ax_norm, ax_lr = fig.add_subplot(2, 1, 1), fig.add_subplot(2, 2, 3), \
        fig.add_subplot(2, 2, 4)
    for name, c in PLOTTED.items():
        if name not in results:
            continue
        s = results[name]
        per = s["groups_per_epoch"]
        x = (np.arange(len(s["losses"])) + 1) / per  # epochs completed after each step
        ax_loss.plot(x, s["losses"], color=c, alpha=0.35, lw=1)
        means = epoch_means(s)
        ax_loss.plot(np.arange(1, len(means) + 1), means, "o-", color=c,
                     label=f"{name}: epoch mean training loss")
        ax_loss.axhline(s["corpus_loss"], color=c, ls="--", lw=1,
                        label=f"{name}: final weights on the whole corpus "
                              f"({s['corpus_loss']:.3f})")
        ax_norm.plot(x, s["grad_norms"], color=c, lw=1, label=name)
        ax_lr.plot(x, s["lrs"], color=c, lw=1.5, label=name)
    ax_loss.set(title=f"Training loss, preset {PRESET}, stdlib email package, {EPOCHS} epochs "
                      "(thin: every step)", xlabel="epochs", ylabel="cross-entropy (nats/token)")
    ax_loss.legend(fontsize=8)
    ax_norm.set(title="gradient norm before clipping", xlabel="epochs", yscale="log")
    ax_norm.legend(fontsize=8)
    ax_lr.set(title="learning rate", xlabel="epochs")
    ax_lr.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)


def main() -> None:
    global EPOCHS
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated names")
    ap.add_argument("--out", type=Path, default=OUT, help="folder of the results and plots")
    args = ap.parse_args()
    EPOCHS = args.epochs
    tag = f"{EPOCHS}ep"
    data, held_out = stdlib_folder("email"), stdlib_folder("json")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.variants.split(","):
            extra = VARIANTS[name]
            s = train(name, extra, data, Path(tmp))
            s["corpus_loss"] = corpus_loss(s["checkpoint"], data)
            s["held_out_loss"] = corpus_loss(s["checkpoint"], held_out)
            del s["checkpoint"]
            results[name] = s
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"results-{tag}.json").write_text(json.dumps(results, indent=1, sort_keys=True))
    plot(results, args.out / f"loss-curves-{tag}.png")
    print(json.dumps({k: {m: v[m] for m in ("corpus_loss", "held_out_loss", "steps")}
                      for k, v in results.items()}, indent=1))


if __name__ == "__main__":
    main()
