"""Measuring a run: CPU, memory and stacks of the process, machine facts, and what the run
record (fast.record) says: verdicts (evidence), Chrome trace, Gantt timeline, thread clocks.
"""
