#!/usr/bin/env bash
# The Kissing Spheres CI recipe (docs/CI.md): install, the equivalence gates as JUnit XML, a quick
# analysis, its re-check, and the comparison with the last good run as the job summary.
# Every step runs even when an earlier one failed, so every artifact is there to look at; the
# script then exits with the first failing step's code (1 a gate failed, 2 bad input, 3 stall,
# 4 fault, 5 internal). Settings, all optional (the defaults are what a real CI job runs):
#   SPHERES_CI_OUT              folder for every artifact                 (default: ci-out)
#   SPHERES_CI_PYTHON           the Python to install into and run with    (default: python3)
#   SPHERES_CI_INSTALL          1: pip install the checkout first; 0: it is installed already
#   SPHERES_CI_VERIFY_THREADS   verify --threads                           (default: 1-63)
#   SPHERES_CI_VERIFY_PRESETS   verify --presets                           (default: tiny,small)
#   SPHERES_CI_VERIFY_DTYPES    verify --dtypes                            (default: float64,float32)
#   SPHERES_CI_ANALYZE_THREADS  analyze --quick --threads                  (default: the cores)
#   SPHERES_CI_BASELINE         results.json of the last good run to compare with (none: skipped)
#   SPHERES_CI_SUMMARY          the job summary file (default: $GITHUB_STEP_SUMMARY, else
#                               $SPHERES_CI_OUT/summary.md)
set -u -o pipefail

OUT=${SPHERES_CI_OUT:-ci-out}
PYTHON=${SPHERES_CI_PYTHON:-python3}
SUMMARY=${SPHERES_CI_SUMMARY:-${GITHUB_STEP_SUMMARY:-$OUT/summary.md}}
BASELINE=${SPHERES_CI_BASELINE:-}
REPORT="$OUT/report"
cd "$(dirname "$0")/../.."  # the checkout's root

spheres() { "$PYTHON" -m harness "$@"; }  # the `spheres` command of this checkout

first_failure=0
declare -a rows=()
step() {  # step NAME COMMAND...: run it, log it, remember its exit code
    local name=$1 code
    shift
    echo "::group::$name"
    "$@"
    code=$?
    echo "::endgroup::"
    rows+=("| $name | $code |")
    if [ "$code" -ne 0 ] && [ "$first_failure" -eq 0 ]; then
        first_failure=$code
    fi
    echo "ci: $name: exit $code"
    return 0
}

mkdir -p "$OUT" || exit 2

if [ "${SPHERES_CI_INSTALL:-1}" = "1" ]; then
    step install "$PYTHON" -m pip install --quiet .
fi
step verify spheres verify --threads "${SPHERES_CI_VERIFY_THREADS:-1-63}" \
    --presets "${SPHERES_CI_VERIFY_PRESETS:-tiny,small}" \
    --dtypes "${SPHERES_CI_VERIFY_DTYPES:-float64,float32}" \
    --junit "$OUT/verify.xml" --markdown "$OUT/verify.md" --json "$OUT/verify.json"
analyze_threads=()
if [ -n "${SPHERES_CI_ANALYZE_THREADS:-}" ]; then
    analyze_threads=(--threads "$SPHERES_CI_ANALYZE_THREADS")
fi
step analyze spheres analyze --quick "${analyze_threads[@]}" --out "$REPORT" --quiet
step check spheres check "$REPORT"

compare_md="$OUT/compare.md"
if [ -n "$BASELINE" ] && [ -f "$BASELINE" ] && [ -f "$REPORT/results.json" ]; then
    compare_into() { spheres compare "$1" "$2" > "$3"; }
    step compare compare_into "$BASELINE" "$REPORT/results.json" "$compare_md"
else
    echo "No baseline results.json (SPHERES_CI_BASELINE=${BASELINE:-unset}): nothing to" \
         "compare with; this run's report becomes the next run's baseline." > "$compare_md"
fi

{
    echo "## Kissing Spheres gates"
    echo
    echo "| step | exit |"
    echo "|---|---:|"
    printf '%s\n' "${rows[@]}"
    echo
    grep -m1 '^\*\*Verdict\*\*' "$REPORT/analysis.md" 2>/dev/null || echo "No analysis report."
    echo
    echo "### Against the last good run"
    echo
    cat "$compare_md"
} >> "$SUMMARY"

echo "ci: artifacts in $OUT; summary in $SUMMARY; exit $first_failure"
exit "$first_failure"
