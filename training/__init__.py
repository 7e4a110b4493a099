"""Training pipeline: data preparation, model building, training, evaluation and tracking.

Serving never imports this package.
"""
