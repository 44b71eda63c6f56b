"""Shared settings and fixtures of the `make bench` suites.

`python -m harness.bench.runner` runs these files with pytest-benchmark enabled and reads back the
`extra_info` each benchmark stores (tokens, threads, stats), so every figure in the summary can
be traced to one benchmark. Sizes come from `--ks-*` options so a quick run proves the pipeline
on a small preset and the full run measures the seed preset.
"""

from __future__ import annotations

import importlib.util
from dataclasses import asdict, dataclass
from pathlib import Path

import pytest

from harness.bench.workload import random_group
from harness.measure.machine import machine_info
from reference.config import Config, preset

# The thread-leak check of the test suite, shared rather than copied (tests/ is no package).
_spec = importlib.util.spec_from_file_location(
    "_ks_tests_conftest", Path(__file__).resolve().parents[1] / "tests" / "conftest.py")
_tests_conftest = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_tests_conftest)
no_thread_leak = _tests_conftest.no_thread_leak


@dataclass(frozen=True)
class BenchSettings:
    """What to measure; the defaults are the seed preset run of `make bench`."""

    preset: str = "seed"  # model and batch sizes of every engine benchmark
    scaling_threads: tuple[int, ...] = (1, 2, 4)  # thread counts of the side-by-side sweep
    scaling_group: int = 8  # batches per step in the sweep (keeps each point ~10-30 s)
    seed_threads: int = 63  # the seed's worker count
    seed_group: int = 0  # batches in the seed workload's group; 0 = the preset's G (63)
    rounds: int = 2  # measured steps per benchmark, after one warm-up step; best one counts
    matmul_n: int = 2048  # square sgemm size for the machine's float32 peak

    def config(self, group_size: int | None = None) -> Config:
        cfg = preset(self.preset)
        return cfg.replace(group_size=group_size) if group_size else cfg

    @property
    def seed_group_size(self) -> int:
        return self.seed_group or preset(self.preset).train.group_size


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("kissing-spheres bench")
    defaults = BenchSettings()
    group.addoption("--ks-preset", default=defaults.preset)
    group.addoption("--ks-scaling-threads", default=",".join(map(str, defaults.scaling_threads)))
    group.addoption("--ks-scaling-group", type=int, default=defaults.scaling_group)
    group.addoption("--ks-seed-threads", type=int, default=defaults.seed_threads)
    group.addoption("--ks-seed-group", type=int, default=defaults.seed_group)
    group.addoption("--ks-rounds", type=int, default=defaults.rounds)
    group.addoption("--ks-matmul-n", type=int, default=defaults.matmul_n)


def settings_from(config: pytest.Config) -> BenchSettings:
    return BenchSettings(
        preset=config.getoption("--ks-preset"),
        scaling_threads=tuple(int(t) for t in config.getoption("--ks-scaling-threads").split(",")),
        scaling_group=config.getoption("--ks-scaling-group"),
        seed_threads=config.getoption("--ks-seed-threads"),
        seed_group=config.getoption("--ks-seed-group"),
        rounds=config.getoption("--ks-rounds"),
        matmul_n=config.getoption("--ks-matmul-n"),
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """`scaling_threads` is parametrised from the command line, one benchmark per count."""
    if "scaling_threads" in metafunc.fixturenames:
        counts = settings_from(metafunc.config).scaling_threads
        metafunc.parametrize("scaling_threads", counts, ids=[f"T{t}" for t in counts])


@pytest.fixture(scope="session")
def bench_settings(pytestconfig: pytest.Config) -> BenchSettings:
    return settings_from(pytestconfig)


def pytest_benchmark_update_json(config, benchmarks, output_json) -> None:
    """Machine, commit and bench settings travel with the numbers."""
    settings = settings_from(config)
    output_json["kissing_spheres"] = {
        "machine": machine_info(),
        "settings": asdict(settings),
        "config": settings.config().to_dict(),
    }


@pytest.fixture(scope="session")
def make_group():
    """`harness.bench.workload.random_group` as a fixture."""
    return random_group
