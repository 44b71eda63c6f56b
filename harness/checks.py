"""Verdicts from measured figures: each check names what it tested and the number behind it.

`build_checks` reads only the results dict `harness.analyze` assembled; known issues and
recommendations are derived from the same figures, never from a template.
"""

from __future__ import annotations

from typing import Any

SEED_PEAK_BYTES = 1.32e9  # the seed run's peak memory
SCALING_TARGET = 1.8  # 2 threads vs 1 (the fast-engine issue)
CPU_USE_TARGET = 0.7  # busy share of all cores during training that we call healthy


def _check(section: str, title: str, passed: bool, figure: str) -> dict[str, Any]:
    return {"section": section, "title": title, "passed": bool(passed), "figure": figure}


def _mib(n: float) -> str:
    return f"{n / 2**20:,.0f} MiB"


def build_checks(r: dict[str, Any]) -> list[dict[str, Any]]:
    data, tr, st, th = r["data"], r["training"], r["structure"], r["threads"]
    perf, mem, eq = r["performance"], r["memory"], r["equivalence"]
    meta = r["meta"]
    T, G = meta["threads"], data["group_size"]
    checks = []

    # initialisation
    checks.append(_check("initialisation", "engine started (kernels compiled, threads created)",
                         tr["compile_seconds"] > 0 and (tr["steps"] > 0 or tr["error"]),
                         f"start-up {tr['compile_seconds']:.2f} s, "
                         f"{len(th.get('workers', []))} workers + Node Zero"))
    alive = tr["threads_alive_after_close"]
    checks.append(_check("initialisation", "clean shutdown: every ks- thread joined",
                         alive == [], f"threads alive after close: {alive or 'none'}"))

    # 12-fold symmetry
    positions = st["positions"]
    want = min(12, T)
    with_workers = sum(1 for p in positions if p["workers"])
    checks.append(_check("symmetry", "workers cover the symmetry positions (worker i at i mod 12)",
                         with_workers == want,
                         f"{with_workers} of 12 positions hold workers (expected {want})"))
    want_b = min(12, G)
    with_batches = sum(1 for p in positions if p["batches"])
    checks.append(_check("symmetry", "each group's batches spread over positions (b mod 12)",
                         with_batches == want_b and sum(p["batches"] for p in positions) == G,
                         f"{with_batches} positions hold the {G} batches (expected {want_b})"))

    # kissing spheres
    checks.append(_check("spheres", "hierarchy is 1 + 12 + 144 spheres",
                         st["level_sizes"] == [1, 12, 144] and st["total_spheres"] == 157,
                         f"levels {st['level_sizes']}, total {st['total_spheres']}"))
    bitwise = [f for f in eq["failures"] if "bitwise" in f]
    checks.append(_check("spheres", "sphere reduction tree gives bitwise-identical gradients "
                         "for every thread count", not bitwise and eq["runs"] > 0,
                         f"{eq['runs']} runs, {len(bitwise)} bitwise mismatches"))

    # Node Zero
    nz = th.get("node_zero", {})
    checks.append(_check("node_zero", "Node Zero never computes a batch",
                         nz.get("batches", -1) == 0,
                         f"Node Zero batches: {nz.get('batches', 'n/a')}"))

    # workers
    workers = th.get("workers", [])
    counts = [w["batches"] for w in workers]
    if counts:
        need = G >= T
        busy = sum(1 for c in counts if c)
        ok = min(counts) >= 1 if need else busy == G
        checks.append(_check("workers", "every worker computes when G >= T"
                             if need else "idle workers (T > G) get no invalid batch range",
                             ok, f"batches per worker min {min(counts)}, max {max(counts)}, "
                             f"{busy}/{len(counts)} busy "
                             f"over {tr['steps']} steps"))

    # batch loading
    checks.append(_check("batch_loading", "batches per epoch = ceil((N-1)/(B*S)) and the "
                         "iterator stops", data["batches_per_epoch"] == data["expected_batches"]
                         and data["groups_per_epoch"] == data["expected_groups"],
                         f"counted {data['batches_per_epoch']} batches / "
                         f"{data['groups_per_epoch']} groups; formula {data['expected_batches']}"
                         f" / {data['expected_groups']}"))
    checks.append(_check("batch_loading", "tokenisation peak memory below the original's 838 MB",
                         data["tokenize_peak_bytes"] < 838e6,
                         f"peak RSS {_mib(data['tokenize_peak_bytes'])} in "
                         f"{data['tokenize_seconds']:.2f} s"))

    # batch processing
    losses = tr["losses"]
    checks.append(_check("batch_processing", "every requested step finished",
                         tr["steps"] == meta["steps"] and not tr["error"],
                         f"{tr['steps']}/{meta['steps']} steps"
                         + (f"; error: {tr['error_kind']}: {tr['error']}" if tr["error"] else "")))
    finite = bool(losses) and all(x == x and abs(x) != float("inf") for x in losses)
    checks.append(_check("batch_processing", "loss is finite at every step",
                         finite, f"losses {', '.join(f'{x:.4f}' for x in losses[:6])}"
                         + (" ..." if len(losses) > 6 else "") if losses else "no loss"))
    if tr.get("unfired_faults"):
        checks.append(_check("batch_processing", "every injected fault fired", False,
                             f"never fired: {tr['unfired_faults']}"))

    # performance: the targets are set at the seed preset (the fast-engine issue); at smaller
    # presets a step is too short for them to mean anything, so the figures are shown only
    tp = perf["throughput"] if meta["preset"] == "seed" else []
    two = next((p for p in tp if p["threads"] == 2), None)
    if two is not None and perf["cores"] >= 2:
        checks.append(_check("performance", f"2 threads >= {SCALING_TARGET}x one thread",
                             two["speedup"] >= SCALING_TARGET,
                             f"{two['speedup']:.2f}x ({two['tokens_per_s']:,.0f} vs "
                             f"{tp[0]['tokens_per_s']:,.0f} tokens/s)"))
    many = max(tp, key=lambda p: p["threads"]) if tp else None
    if two is not None and many is not None and many["threads"] > 2:
        ratio = many["tokens_per_s"] / two["tokens_per_s"]
        checks.append(_check("performance", f"{many['threads']} threads do not collapse "
                             "(>= 0.9x two threads)", ratio >= 0.9, f"{ratio:.2f}x"))
    if tr["steps"] and meta["preset"] == "seed":
        checks.append(_check("performance", f"CPU use during training >= {CPU_USE_TARGET:.0%}",
                             perf["cpu_utilisation"] >= CPU_USE_TARGET,
                             f"{perf['cpu_seconds']:.1f} CPU s / {perf['wall_seconds']:.1f} wall s"
                             f" / {perf['cores']} cores = {perf['cpu_utilisation']:.1%}"))

    # memory
    if meta["preset"] == "seed":
        checks.append(_check("memory", "peak RSS below the seed run's 1.32 GB",
                             mem["peak_rss_bytes"] < SEED_PEAK_BYTES,
                             f"{_mib(mem['peak_rss_bytes'])}"))
    mr = mem.get("memray") or {}
    if mr:
        checks.append(_check("memory", "memray native tracking of one step",
                             not mr.get("error") and bool(mr.get("top")),
                             f"peak {_mib(mr['peak_bytes'])}" if mr.get("peak_bytes")
                             else f"error: {mr.get('error')}"))

    # synchronisation (drills)
    for d in r["drills"]:
        checks.append(_check("synchronisation", f"drill: {d['name']}", d["passed"],
                             d["outcome"]))

    # architecture verification
    for dtype in eq["dtypes"]:
        rows = [x for x in eq["records"] if x["dtype"] == dtype]
        if not rows:
            continue
        worst = max(rows, key=lambda x: x["grad_error"])
        failed = [x for x in rows if not x["passed"]]
        checks.append(_check("architecture", f"fast = reference ({dtype}) for every thread count",
                             not failed, f"{len(rows)} runs, worst gradient error "
                             f"{worst['grad_error']:.2e} (`{worst['worst_tensor']}`, "
                             f"{worst['preset']}, T={worst['threads']}), {len(failed)} failed"))
    return checks


def known_issues(r: dict[str, Any]) -> list[str]:
    """What the measurements show is wrong or weak, each with its figure."""
    issues = [f"{c['title']}: {c['figure']}" for c in r["checks"] if not c["passed"]]
    perf, tr = r["performance"], r["training"]
    tp = perf["throughput"]
    if len(tp) >= 2:
        best = max(tp, key=lambda p: p["tokens_per_s"])
        worst = min(tp, key=lambda p: p["tokens_per_s"])
        slower = worst["tokens_per_s"] < 0.8 * best["tokens_per_s"]
        if slower and worst["threads"] > best["threads"]:
            issues.append(f"oversubscription costs throughput: {worst['threads']} threads give "
                          f"{worst['tokens_per_s']:,.0f} tokens/s against "
                          f"{best['tokens_per_s']:,.0f} at {best['threads']}")
    nz = r["threads"].get("node_zero", {})
    if tr["seconds"] > 0 and nz:
        share = (nz.get("reduce_seconds", 0) + nz.get("update_seconds", 0)) / tr["seconds"]
        if share > 0.1:
            issues.append(f"Node Zero's reduce + update take {share:.0%} of training time")
    workers = r["threads"].get("workers", [])
    if tr["seconds"] > 0 and workers:
        late = max(workers, key=lambda w: w["wait_a_seconds"])
        share = late["wait_a_seconds"] / tr["seconds"]
        counts = [w["batches"] for w in workers]
        if share > 0.01:
            issues.append(f"load imbalance: {late['name']} waited {late['wait_a_seconds']:.1f} s "
                          f"at Point A ({share:.1%} of training time); workers ran "
                          f"{min(counts)} to {max(counts)} batches over {tr['steps']} steps, "
                          f"as G={r['data']['group_size']} does not split evenly over "
                          f"T={len(workers)}")
    mr = r["memory"].get("memray") or {}
    if mr.get("top"):
        t = mr["top"][0]
        issues.append(f"largest live allocation site at peak: `{t['function']}` "
                      f"({t['file']}:{t['line']}) holding {_mib(t['bytes'])}")
    return issues


def recommendations(r: dict[str, Any]) -> list[str]:
    """Actions that follow from the measured figures."""
    recs = []
    perf, meta = r["performance"], r["meta"]
    tp = perf["throughput"]
    if tp:
        # the fewest threads within 3% of the best: differences below that are noise here
        top = max(p["tokens_per_s"] for p in tp)
        pick = min((p for p in tp if p["tokens_per_s"] >= 0.97 * top), key=lambda p: p["threads"])
        recs.append(f"Run with {pick['threads']} threads on this {perf['cores']}-core machine: "
                    f"{pick['tokens_per_s']:,.0f} tokens/s, within 3% of the best measured "
                    f"({top:,.0f}); more threads only share the same cores.")
    if (perf["cpu_utilisation"] < CPU_USE_TARGET and r["training"]["steps"]
            and meta["preset"] == "seed"):
        recs.append(f"CPU use is {perf['cpu_utilisation']:.0%}: look at the flame graph for "
                    "time outside the kernels (barrier waits, Python overhead).")
    failed = [c for c in r["checks"] if not c["passed"]]
    if failed:
        recs.append("Fix the failed checks first: " + "; ".join(c["title"] for c in failed[:5]))
    if meta["preset"] == "seed" and r["memory"]["peak_rss_bytes"] >= SEED_PEAK_BYTES:
        recs.append("Lower `micro_batch` or the thread count to bring peak memory under 1.32 GB.")
    if not failed:
        recs.append("Keep `spheres verify` (1-63 threads) as a CI gate: it is what proves the "
                    "reduction stays bitwise-deterministic.")
    return recs
