"""Measuring a run: per-thread CPU sampling, memory (memray, RSS), stacks (py-spy) and machine
facts.
"""
