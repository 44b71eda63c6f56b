"""Every pass/fail threshold of analyze, verify, bench and the reports: defined once, with its
reason. Modules that judge a figure import it from here; none writes the number out again.
"""

from __future__ import annotations

GB = 1e9  # memory limits are decimal gigabytes / megabytes, as the seed reported them
MB = 1e6  # (the tokeniser's peaks are in megabytes)

# The seed run's peak memory (its report: 1.32 GB): our seed-preset run must stay below it.
SEED_PEAK_BYTES = 1.32 * GB
# The seed's tokenizer needed 838 MB to build a vocabulary from its 24 MB SQuAD text.
SEED_TOKENIZE_PEAK_BYTES = 838 * MB
# Our own tokenisation target for that corpus (the bench target): well under the seed's.
TOKENIZE_PEAK_BYTES = 500 * MB
TOKENIZE_SECONDS = 10.0  # 24 MB of text tokenised within 10 s on one core

# 2 threads vs 1 on the seed preset: the fast-engine issue's target (90% parallel efficiency).
SCALING_TARGET = 1.8
# Many threads (63) vs 2 on 2 cores: oversubscription may cost at most 10% of throughput.
NO_COLLAPSE_RATIO = 0.9
# Rounds of analyze's throughput sweep: each round times one step of every thread count (a
# fresh engine, one burn-in step first), in forward then reverse order, and each count's
# median step is counted. This VM's speed drifts by 10% within a minute: timed one count after
# another, 63 threads (always last) read 0.88x, 1.10x and 0.93x two threads in three runs of
# the same tree on 2026-12-03. The median, not the fastest, because outliers go both ways: in
# the first interleaved seed run one 1-thread step took 7.52 s beside 8.93 and 8.63 s, and
# counted as the fastest it read two threads at 1.71x one (the median: 1.92x). Three rounds
# keep the phase near two minutes at the seed preset (G=4, about 4.5 s a step).
THROUGHPUT_ROUNDS = 3
# MPI (SPEC 10): two ranks of one thread vs one process of two threads on the same 2 cores; the
# ranks pay for gathering segments and broadcasting weights, at most 15% of throughput.
MPI_RATIO_TARGET = 0.85
# MPI bytes per rank per step (#18): a ring all-reduce sends and receives about 2P per rank
# (P = the weights' bytes); the reduce-scatter + all-gather step may move at most 1.5x that in
# either direction on every rank, rank 0 included (the root gather it replaced: 11P at R = 12).
MPI_BYTES_OVER_RING = 1.5
# Busy share of all cores during training that we call healthy (waits and Python cost the rest).
CPU_USE_TARGET = 0.7
# Model FLOP/s against the measured float32 matmul peak: what dense kernels can reach in practice.
PEAK_FRACTION_TARGET = 0.6
# Issue #22 (it replaced #12's 0.90 and 0.88, which OpenBLAS's own per-shape ceiling put out of
# reach: 0.82 of the peak with every product on its shape alone), measured side by side in one
# run: the GEMMs are ~93% of the model's FLOPs, so 85% of the float32 sgemm peak at 2 threads
# leaves room for attention, the element-wise kernels and the step;
PEAK_FRACTION_T2_TARGET = 0.85
# and one thread, against one core's peak, the same 85%;
PEAK_FRACTION_T1_TARGET = 0.85
# 63 workers on 2 cores against one worker per core on the same group: 2% is step noise;
OVERSUBSCRIPTION_RATIO = 0.98
# with the workspace pool only min(T, cores) activation workspaces exist: 63 threads cost what
# 2 do, so the seed workload must fit in 1.0 GB (below the seed run's own 1.32 GB).
SEED_WORKLOAD_PEAK_BYTES = 1.0 * GB
# Fast engine vs PyTorch eager and vs torch.compile at the same threads and workload (#22; #12
# asked 1.5x of eager): the lead over the obvious alternative that #22 asks on whichever machine
# runs the bench (measured before it: 0.97x on the Intel machine, 1.13-1.29x on the AMD one).
TORCH_RATIO_TARGET = 1.3
# Issue #22: a linear layer's products in the batch must run as fast as the same calls alone
# (5% is what call order and cold operands may cost; more means the surroundings, not the
# product, set the speed);
GEMM_IN_PLACE_TARGET = 0.95
# and attention at half of one core's sgemm peak (model FLOP count, full S): its products are
# small and its softmax is element-wise work the GEMMs do not have. (Attention runs on OpenBLAS
# per 64-query block; a fused Numba kernel tried for #22 was 0.94x per batch in place.)
ATTENTION_PEAK_FRACTION_TARGET = 0.5

# Recommendation: the fewest threads within 3% of the best; below that the difference is noise.
RECOMMEND_WITHIN = 0.97
# Known issue: a thread count slower than 80% of the best is oversubscribed, not noise.
OVERSUBSCRIBED_BELOW = 0.8
# Known issue: Node Zero's own work above 10% of training time would be a serial bottleneck.
NODE_ZERO_SHARE_LIMIT = 0.10
# Known issue: a worker waiting at Point A for over 1% of training time shows load imbalance.
POINT_A_WAIT_SHARE = 0.01
# Bench warning: CPU use below 80% of what a row's threads could use means other load competed.
BENCH_CPU_SHORTFALL = 0.8

# Bench history: a slowdown must exceed NOISE_FACTOR x the rounds' own spread, and never less
# than NOISE_FLOOR: with 2 rounds on a shared 2-core machine the spread of one run understates
# the run-to-run scatter (measured: 2-5% between back-to-back runs of the same commit).
NOISE_FACTOR = 2.0
NOISE_FLOOR = 0.05  # (reasons above)

# Tracing may cost at most 2% of tokens/s (the timeline issue's target).
TRACE_OVERHEAD_LIMIT = 0.02

# Equivalence gates (verify, analyze, verify --ranks): relative L2 against the float64 reference.
# float64 runs the reference's own arithmetic in another order: only rounding (~1e-16 per op,
# accumulated over a step) may differ, 1e-10 leaves six orders of margin and still catches any
# real bug. float32 keeps ~7 digits: 1e-4 on gradients (summed over a group's batches) and 1e-5
# on the loss (a mean of well-conditioned terms) are what float32 reaches on every preset (the
# fast-engine issue's tolerances).
GRAD_TOL = {"float64": 1e-10, "float32": 1e-4}
LOSS_TOL = {"float64": 1e-10, "float32": 1e-5}  # (reasons above)
# weights after a few AdamW steps: the update divides by sqrt(v), which amplifies rounding in
# small gradients, so float64 gets 1e-8 (still far below a one-step error) and float32 1e-4.
TRAJ_TOL = {"float64": 1e-8, "float32": 1e-4}
# Locating a failed tolerance gate (verify): one batch's forward activations (LayerNorm outputs,
# attention and MLP hidden values) against the reference, per layer. The loss tolerance: a
# forward value is a handful of well-conditioned ops from the weights, no sum over a group, and
# healthy runs measure <1e-15 (float64) and <5e-7 (float32, preset small), so a healthy layer
# is never named.
ACT_TOL = LOSS_TOL

# Watchdog drills: a stall must be reported within the stall timeout plus a few seconds (SPEC 5);
# 10 s covers a loaded 2-core machine joining threads after the report.
DETECT_SLACK = 10.0

# Signals (harness/run/stop.py). A stop "at once" (a second signal, or any signal outside a loop
# that stops at safe points) may spend at most 1 s on cleanup before the process ends anyway:
# joining threads mid-kernel can take a whole step (5.7 s measured), and the README promises
# "at once"; what is abandoned is only in-flight work (atomic writes leave temp files that the
# next write removes). 1 s keeps the whole exit under 2 s on a loaded 2-core machine.
STOP_AT_ONCE_SECONDS = 1.0
# How often a loop waiting on a child process (engines --measure, --ranks) looks for a stop:
# 0.1 s is invisible next to the child's own seconds and keeps a stop prompt.
STOP_POLL_SECONDS = 0.1
# A child process group told to stop (SIGTERM) gets 1 s to end before SIGKILL: enough for a
# Python child to unwind, short enough to keep the parent's stop within a few seconds.
CHILD_STOP_SECONDS = 1.0
# torch-ddp (harness/run/ddp_engine.py): the first request, `init`, may take this long per
# rank of the world before it is a stall. Each rank imports torch and joins the gloo
# rendezvous: measured 11 s for a world of 2 on an idle 2-core EPYC, but a world of 2 missed
# a 60 s deadline with other jobs on both cores; 60 s per rank keeps a never-starting world
# caught (it is still a stall, exit 3) without failing a healthy one on a loaded machine.
DDP_START_SECONDS_PER_RANK = 60.0

# Preflight (harness/commands/preflight.py): resources a run needs, estimated from the sizes it
# is given before any work. A run is refused when the estimate exceeds this share of the memory
# psutil reports available: the estimate counts only the big arrays (Python objects, BLAS
# buffers and the page cache are not in it) and other processes on a shared machine need the
# rest; a run that is refused at 80% would be swapping or killed near 100%.
MEMORY_AVAILABLE_FRACTION = 0.8
# The synthetic corpus while it is generated and encoded: measured peak 62-76 bytes per token
# (tracemalloc, 2e5 and 1e6 tokens, tiny preset; word and sentence arrays, the joined text);
# 80 covers both.
SYNTHETIC_BYTES_PER_TOKEN = 80
# A text file being read and encoded: the text, its words and the int64 ids before the stream
# is narrowed (measured 13.1 bytes of peak per byte of text, tracemalloc, a 1.3 MB file); 16
# covers it.
TEXT_BYTES_PER_BYTE = 16
# Committed memory per started thread: measured 16 KiB for an idle thread (2000 threads, RSS
# delta); a worker inside the kernels touches more of its 8 MiB reserved stack, 64 KiB covers it.
THREAD_BYTES = 64 * 1024
# Worker threads per usable core: the seed design runs 63 workers (G=63) on any machine, so 63
# on one core is the most oversubscription it asks for, and the bench holds 63 on 2 cores within
# 2% of 2. Beyond that every barrier hands each worker the GIL in turn: 10000 workers on 2 cores
# spent 25 s in one tiny-preset step (progress "step ETA 0s") and outlived SIGTERM by 5 s.
MAX_THREADS_PER_CORE = 64
# Checkpoints a run will keep on disk at once (keep-N, plus the one being written) may use at
# most this share of the free space: the rest is for the --json, trace and stall files and for
# other writers; a run refused here would otherwise fail its last write after all the work.
DISK_FREE_FRACTION = 0.9
# The fast engine's run record (fast/record.py) keeps every span of every step: measured 77
# bytes of RSS per span (1.5 MB over 1000 tiny-preset steps of 20 spans each: 8 batches and 4
# barrier waits of 3 threads); 128 covers it. One step has about G + 4 x (T + 1) spans.
RECORD_BYTES_PER_SPAN = 128
# A --trace file: measured 198 bytes of JSON per span (tiny preset, 10 and 40 steps); 256
# covers it. Checked against the free disk like the checkpoints.
TRACE_BYTES_PER_SPAN = 256

# Timeouts typed on the command line (#20 class 5): each has a floor below which it measures
# the machine's noise, not the run. A stall timeout must cover several of the waiters' deadline
# polls (fast/barrier.py, reduction.py, workspace_pool.py re-check every 0.2 s, Node Zero every
# 0.25 s) and a healthy step's hiccups on a loaded 2-core machine (a GC pause, a page-fault
# burst, a descheduled thread: 0.1-0.5 s measured): 0.001 s called a healthy tiny run a stall.
MIN_STALL_TIMEOUT = 1.0
# An engine's request deadline (`engines --stall-timeout`, exec engines): the same floor, and a
# child Python process needs ~0.3 s just to import NumPy before its first reply.
MIN_ENGINE_TIMEOUT = 1.0
# Plain progress lines: below 0.1 s they flood the log (and a CI page) without news.
MIN_PROGRESS_SECONDS = 0.1

# A/B timing (`spheres ab`, and `make bench`'s history gate through the same statistics):
# a change is called only when the two-sided Mann-Whitney U test gives p below AB_ALPHA, the
# conventional 5% false-alarm rate asv uses too, AND the ratio's whole interval lies beyond the
# noise band. The band is what an A/A comparison in the same session reaches, never below
# AB_MIN_EFFECT: a 1% change is below what one fresh process of a short workload resolves on a
# shared machine (timer, page faults, scheduler ticks), so a narrower band only flags noise.
AB_ALPHA = 0.05
AB_MIN_EFFECT = 0.01  # (reasons above)
# 4 samples per side is the fewest at which any outcome of the U test reaches AB_ALPHA (the
# smallest two-sided p at 4 against 4 is 2/70 = 0.029; at 3 against 3 it is 0.1): fewer rounds
# can never show a change, so `spheres ab` refuses them.
AB_MIN_ROUNDS = 4
# One measuring process of `spheres ab`, including a cold numba compile of the tree under test
# (about a minute on the 2-core machine while other jobs run): 10 minutes means it hangs.
AB_CHILD_TIMEOUT_SECONDS = 600.0

# `spheres simulate` (issue #18): the protocol on a simulated N-core machine, stand-in batches.
# 64 simulated cores, T = G = 63, 1 s per batch: every batch computes at once, so a step is one
# batch time plus folds, reduction and update; 1.3 s leaves 0.3 s for those and for this
# loaded 2-core machine's scheduling of 64 threads (the 12-way chain took 6.04 s).
SIM_STEP_64_SECONDS = 1.3
# T = 63 on 16 and 32 simulated cores: within 10% of ceil(G / N) x c + fold and update time
# (the issue's bound: the protocol adds no wait beyond the cores' own rounds).
SIM_IDEAL_RATIO = 1.10
# The simulator's test run (c = 0.05 s): the step within this factor of its ideal. Looser than
# SIM_IDEAL_RATIO because 0.05 s batches make the machine's scheduling jitter (tens of ms on
# this loaded host) a large share of the step; it still fails on the old 12-way chain.
SIM_TEST_IDEAL_RATIO = 1.6
# The gradient buffers' fold (one P-length add per batch) may take at most this share of a
# step on the real engine (the bound: ordering only the folds must stay cheap).
FOLD_SHARE_LIMIT = 0.02
