"""One override parser (core.overrides) for python -m core, study.run and analysis: the same text, the same value."""

import pytest

from core import __main__ as core_cli
from core.config import ConfigError, TrainConfig
from core.overrides import kinds, parse_assignments, parse_value
from search_spaces.space import resolve_trial
from study import run as study_cli

SETS = ["epochs=50", "metric_epochs=0,40", "probe_samples=none", "learnable_weights=no", "fid_samples=1e3",
        "lr_milestones=[5,9]", "clip=none", "inception_weights=None"]


def test_python_m_core_and_study_run_resolve_the_same_set_values():
    core_args = core_cli.build_parser().parse_args(["--dataset", "digits", "--budget", "quick",
                                                    *[a for s in SETS for a in ("--set", s)]])
    from_core, _ = core_cli._config_and_state(core_args)
    study_args = study_cli.build_parser().parse_args(["--space", "ablation_images", "--dataset", "digits",
                                                      "--budget", "quick", *[a for s in SETS for a in ("--set", s)]])
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
    assert "--metric-epochs METRIC_EPOCHS image runs: epochs (completed) at which every image metric is computed " \
           "(default: none)" in text
    assert "--beta-neg BETA_NEG weight of the fakes' KL inside the encoder's exp-ELBO (default: 0.9)" in text
