"""`make bench`: targets, runner and summary, bench history, engines side by side, `spheres
compare`, and `spheres ab` with the statistics the history shares.
"""
