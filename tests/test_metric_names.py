"""The metrics' vocabulary (core/metric_names.py): one name, one meaning, read by spaces, study, analysis, protocol."""

from analysis import tables
from core import metric_names
from core.config import TrainConfig
from search_spaces import SPACES, design, get


def test_no_metric_is_named_like_a_config_key_and_every_space_optimises_a_known_objective():
    assert not set(metric_names.METRICS) & set(TrainConfig.__dataclass_fields__)  # `precision` was both once
    for space in SPACES.values():
        assert space.metric in metric_names.OBJECTIVES, space.name
        assert (space.mode == "min") == (metric_names.direction(space.metric) == metric_names.LOWER), space.name


def test_an_fid_without_inception_weights_is_named_fd_classifier_everywhere():
    assert metric_names.without_inception("fid_gen") == "fd_classifier_gen"
    assert metric_names.without_inception("kl") == "kl"
    assert design(get("ablation_images"), "digits", "smoke").metric == "fd_classifier_gen"
    assert metric_names.as_measured("fid_gen", ["fd_classifier_gen"]) == "fd_classifier_gen"
    assert metric_names.as_measured("fid_gen", ["fid_gen", "fd_classifier_gen"]) == "fid_gen"
    assert tables.table_metrics(["fd_classifier_gen", "fd_classifier_rec", "recall"], "mnist") == [
        "fd_classifier_gen",
        "fd_classifier_rec",
        "recall",
    ]
    assert tables.metric_header("gnelbo") == "gnelbo (×1e7) ↓" and tables.metric_header("recall") == "recall ↑"
    assert tables.metric_header("sample_entropy_kl") == "sample_entropy_kl"
