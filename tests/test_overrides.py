"""One override parser (core.overrides) for python -m core, study.run and analysis: the same text, the same value."""

import pytest

from core import __main__ as core_cli
from core.config import ConfigError, TrainConfig, resolve_config
from core.overrides import kinds, parse_assignments, parse_value
from search_spaces.space import resolve_trial
from study import run as study_cli

SETS = [
    "epochs=50",
    "metric_epochs=0,40",
    "probe_samples=none",
    "learnable_weights=no",
    "fid_samples=1e3",
    "lr_milestones=[5,9]",
    "clip=none",
    "inception_weights=None",
]


def test_python_m_core_and_study_run_resolve_the_same_set_values():
    core_args = core_cli.build_parser().parse_args(
        ["--dataset", "digits", "--budget", "quick", *[a for s in SETS for a in ("--set", s)]]
    )
    from_core, _ = core_cli._config_and_state(core_args)
    study_args = study_cli.build_parser().parse_args(
        [
            "--space",
            "ablation_images",
            "--dataset",
            "digits",
            "--budget",
            "quick",
            *[a for s in SETS for a in ("--set", s)],
        ]
    )
    d, _, _ = study_cli.prepare(study_args)
    from_study = resolve_trial(d.study_config(), d.grid_points()[0])
    keys = [s.partition("=")[0] for s in SETS]
    assert {k: getattr(from_core, k) for k in keys} == {k: getattr(from_study, k) for k in keys}
    assert from_core.metric_epochs == (0, 40) and from_core.probe_samples is None
    assert from_core.learnable_weights is False and from_core.fid_samples == 1000
    assert from_core.lr_milestones == (5, 9) and from_core.clip == "none" and from_core.inception_weights is None


def test_a_flag_and_its_set_form_agree_and_bad_text_names_key_and_kind(capsys):
    parser = core_cli.build_parser()
    flag = core_cli._overrides(parser.parse_args(["--metric-epochs", "0,40", "--download", "--beta-kl", "0.5"]))
    assert flag == parse_assignments(["metric_epochs=0,40", "download=true", "beta_kl=0.5"])
    with pytest.raises(SystemExit):
        parser.parse_args(["--iterations", "1.5"])
    assert "iterations='1.5': iterations takes an integer" in capsys.readouterr().err
    with pytest.raises(ConfigError, match=r"learnable_weights='maybe': learnable_weights takes true or false"):
        parse_value("learnable_weights", "maybe")
    with pytest.raises(ConfigError, match="is not KEY=VALUE"):
        parse_assignments(["beta_kl"])
    assert parse_value("variant", "vae-vamp") == "vae-vamp" and parse_value("beta_neg_multiple", "2") == 2
    assert set(kinds()) == {f for f in TrainConfig.__dataclass_fields__}


def test_help_shows_each_keys_meaning_default_and_choices():
    text = " ".join(core_cli.build_parser().format_help().split())
    assert "--clip CLIP the prior's log-variance clipping" in text
    assert "(default: adaptive; one of none, adaptive, fixed)" in text
    assert (
        "--metric-epochs METRIC_EPOCHS image runs: epochs (completed) at which every image metric is computed "
        "(default: none)" in text
    )
    assert "--beta-neg BETA_NEG weight of the fakes' KL inside the encoder's exp-ELBO (default: 0.9)" in text


def test_the_2d_and_image_switches_are_config_keys_with_per_dataset_defaults():
    """fresh_regularizer_samples and squash_pseudo_inputs default per dataset (2D: fresh, raw; images: reuse,
    squashed), are recorded with the config, take overrides and refuse non-booleans; squashing reaches the prior."""
    import torch

    from core.nets import MLPEncoder
    from core.priors import build_prior

    toy, image = resolve_config("8gaussians", "smoke"), resolve_config("digits", "smoke")
    assert (toy.fresh_regularizer_samples, toy.squash_pseudo_inputs) == (True, False)
    assert (image.fresh_regularizer_samples, image.squash_pseudo_inputs) == (False, True)
    assert toy.to_dict()["fresh_regularizer_samples"] is True  # what MLflow records as a param
    flipped = resolve_config(
        "8gaussians", "smoke", **parse_assignments(["fresh_regularizer_samples=no", "squash_pseudo_inputs=yes"])
    )
    assert (flipped.fresh_regularizer_samples, flipped.squash_pseudo_inputs) == (False, True)
    with pytest.raises(ConfigError, match="squash_pseudo_inputs"):
        resolve_config("8gaussians", "smoke", squash_pseudo_inputs="maybe")

    far = torch.full((4, 2), 3.0)  # pseudo-inputs outside [0, 1]
    for config, expected in ((toy, 3.0), (flipped, 1.0)):
        config = resolve_config(
            "8gaussians", "smoke", prior="vamp", num_components=4, squash_pseudo_inputs=config.squash_pseudo_inputs
        )
        prior = build_prior(config, MLPEncoder(2, config.z_dim), lambda k: far[:k])
        assert float(prior.inputs().detach().max()) == expected
