"""The metrics' vocabulary: each reported metric's name, whether lower or higher is better, which benchmarks report
it, how tables print it, and the name a Fréchet distance takes without Inception weights. One table, in the order
reports list metrics; spaces, study, analysis and core.protocol read it. Torch-free (analysis imports it).
"""

from __future__ import annotations

from dataclasses import dataclass

LOWER, HIGHER, NEITHER = -1, 1, 0


@dataclass(frozen=True)
class Metric:
    name: str
    direction: int  # LOWER or HIGHER is better; NEITHER for diagnostics without a better side
    kind: str  # "2d", "image" or "game" (every run's losses and prior statistics)
    scale: float = 1.0  # tables print value × scale (the paper prints gnELBO ×1e7)
    objective: bool = False  # a search space may optimise it


METRICS = {
    m.name: m
    for m in (
        Metric("gnelbo", LOWER, "2d", scale=1e7, objective=True),
        Metric("kl", LOWER, "2d", objective=True),
        Metric("jsd", LOWER, "2d", objective=True),
        Metric("sample_entropy_kl", NEITHER, "2d", objective=True),
        Metric("assignment_entropy", HIGHER, "image", objective=True),
        Metric("fid_gen", LOWER, "image", objective=True),
        Metric("fid_rec", LOWER, "image", objective=True),
        Metric("fd_classifier_gen", LOWER, "image", objective=True),
        Metric("fd_classifier_rec", LOWER, "image"),
        Metric("precision", HIGHER, "image", objective=True),
        Metric("recall", HIGHER, "image", objective=True),
        Metric("svm_few", HIGHER, "image", objective=True),
        Metric("svm_many", HIGHER, "image", objective=True),
        Metric("knn_few", HIGHER, "image", objective=True),
        Metric("knn_many", HIGHER, "image", objective=True),
        Metric("active_modes", NEITHER, "game"),
        Metric("loss_encoder", NEITHER, "game"),
        Metric("loss_decoder", NEITHER, "game"),
        Metric("rec", NEITHER, "game"),
        Metric("kl_real", NEITHER, "game"),
        Metric("kl_fake", NEITHER, "game"),
        Metric("modes_covered", HIGHER, "2d"),  # 8gaussians: did the trial learn the data (core/metrics/modes.py)
        Metric("near_mode", HIGHER, "2d"),
    )
}
OBJECTIVES = tuple(name for name, m in METRICS.items() if m.objective)
# The paper's table columns per benchmark kind.
TABLE_COLUMNS = {
    "2d": ("gnelbo", "kl", "jsd", "sample_entropy_kl", "near_mode", "modes_covered"),
    "image": (
        "assignment_entropy",
        "fid_gen",
        "fid_rec",
        "precision",
        "recall",
        "svm_few",
        "svm_many",
        "knn_few",
        "knn_many",
    ),
}
# The generation score the paper selects image checkpoints by, in the order it is looked for.
SELECTION = ("fid_gen", "fd_classifier_gen")


def direction(name: str) -> int:
    return METRICS[name].direction if name in METRICS else NEITHER


def scale(name: str) -> float:
    return METRICS[name].scale if name in METRICS else 1.0


def without_inception(name: str) -> str:
    """The name a metric takes when no Inception weights are given: an FID becomes the Fréchet distance on
    priorstudy's classifier's features, fd_classifier_* (never called FID); other metrics keep their name."""
    return "fd_classifier_" + name.removeprefix("fid_") if name.startswith("fid_") else name


def as_measured(name: str, measured: list[str] | set[str]) -> str:
    """`name`, or its fd_classifier_* form where the runs measured that and not the FID."""
    fallback = without_inception(name)
    return fallback if name not in measured and fallback in measured else name


def ordered(names: list[str]) -> list[str]:
    """Metrics in the vocabulary's order, then the others alphabetically."""
    known = [m for m in METRICS if m in names]
    return known + sorted(set(names) - set(known))
