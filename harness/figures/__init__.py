"""What a measured figure is (typed results), when it passes (thresholds), and its picture
(plots).
"""
