"""Building engines and driving them on data: corpus, engines, the training loop, stop and rescue,
progress.
"""
