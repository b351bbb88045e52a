"""Evaluation metrics: 2D density metrics (density) and image metrics (images)."""
