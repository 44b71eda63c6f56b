"""`make bench`: targets, runner and summary, bench history, engines side by side, `spheres
compare`.
"""
