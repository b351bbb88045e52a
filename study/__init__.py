"""Thin glue over Ray Tune, Optuna and MLflow: `python -m study.run --space NAME` runs a search space as a study."""
