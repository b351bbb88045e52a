"""Datasets: the 2D toy densities (toy2d) and the image benchmarks (images)."""
