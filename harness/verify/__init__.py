"""The equivalence gates and the drills that exercise them: gates, JUnit output, fault drills,
stress.
"""
