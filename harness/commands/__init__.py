"""One module per `spheres` command (train, grads, verify, engines, analyze, check, compare,
ab, stress, simulate), each with its options and its body, plus what they share: option groups,
preflight checks, the --mpi launch and the mapping of failures to exit codes. The table is
harness/cli.py.
"""
