"""Programs run under mpiexec and their reports: gradient digests, step bench, verify --ranks,
scale-out.
"""
