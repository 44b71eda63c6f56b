"""Reading the run record fast.record keeps: verdicts (evidence), Chrome trace, Gantt timeline,
thread stats.
"""
