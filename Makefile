# Two commands set everything up on a fresh machine: `make analyze` and `make test`.
# Every target installs what it needs into .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# workload of the engines-side-by-side step of `make bench`
BENCH_ENGINES_PRESET ?= seed

.PHONY: install test test-fast verify bench bench-ceiling analyze analyze-quick lint clean test-load stress

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# The README's test command; .ci/run calls exactly this.
test: $(STAMP)
	$(BIN)/python -m pytest -q

# Everything but the slow sweeps, for quick local iteration.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

# The suite beside LOAD_PROCS CPU-bound processes: no test may depend on machine load (#10).
LOAD_PROCS ?= 4
test-load: $(STAMP)
	@pids=""; trap 'kill $$pids 2>/dev/null' EXIT INT TERM; \
	for i in $$(seq $(LOAD_PROCS)); do $(BIN)/python -c "while True: pass" & pids="$$pids $$!"; done; \
	$(BIN)/python -m pytest -q

# A seeded chaos run (#10): perturbed schedules, drawn thread counts and fault combinations.
STRESS_SECONDS ?= 600
STRESS_SEED ?= 0
stress: $(STAMP)
	$(BIN)/spheres stress --seconds $(STRESS_SECONDS) --seed $(STRESS_SEED)

verify: $(STAMP)
	$(BIN)/spheres verify

# The engines side by side and the reproducibility table (reports/bench/repro.md: every engine,
# T=1,2,3, world sizes 1-4) run even when a target was missed; the target verdict is the exit code.
bench: $(STAMP)
	status=0; $(BIN)/python -m harness.bench.runner || status=$$?; \
	$(BIN)/spheres engines --measure --preset $(BENCH_ENGINES_PRESET) --rounds 2 \
		--json reports/bench/engines.json --markdown reports/bench/engines.md || status=$$?; \
	$(BIN)/python -m harness.bench.repro --out reports/bench || status=$$?; \
	exit $$status

# How close to the sgemm peak the model's own GEMM shapes allow, and the micro-batch table.
bench-ceiling: $(STAMP)
	$(BIN)/python -m harness.bench.ceiling

# The main job: build, train, verify, drill the watchdog, profile, and write reports/<date>-<preset>/.
analyze: $(STAMP)
	$(BIN)/spheres analyze

analyze-quick: $(STAMP)
	$(BIN)/spheres analyze --quick

lint: $(STAMP)
	$(BIN)/ruff check reference fast harness tests benchmarks torch_engine examples

clean:
	rm -rf $(VENV) .pytest_cache .benchmarks build *.egg-info
