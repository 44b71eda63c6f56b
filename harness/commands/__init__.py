"""Command bodies behind `spheres`: option helpers, train/grads, verify, --mpi launch, exit
codes.
"""
