"""Building engines and driving them on data: corpus, engines, the training plan and loop, stop
and rescue, the live progress display.
"""
