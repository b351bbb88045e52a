"""Search spaces: the registry, what each space varies, and validation against core's config before any trial."""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import pytest
from ray import tune

import search_spaces
from core.config import BUDGETS, IMAGE_DATASETS, TOY_DATASETS
from search_spaces import SPACES, SpaceError, design, get
from search_spaces.space import SearchSpace, resolve_trial

REQUIRED = (
    "learnable_prior",
    "ablation_regularizers",
    "ablation_priors",
    "betas",
    "betas_grid",
    "mixture_components",
    "clipping",
    "ablation_images",
)


def test_registry_holds_the_required_spaces_and_names_the_known_ones_on_a_typo():
    assert set(REQUIRED) <= set(SPACES)
    known = r"known: ablation_images, ablation_priors, .*learnable_prior, mixture_components"
    with pytest.raises(SpaceError, match=r"unknown search space 'betaz' \(did you mean 'betas'\? " + known):
        get("betaz")


@pytest.mark.parametrize("name", sorted(SPACES))
@pytest.mark.parametrize("budget", BUDGETS)
def test_every_space_validates_on_every_dataset_it_names(name, budget):
    space = get(name)
    assert space.datasets in (TOY_DATASETS, IMAGE_DATASETS)
    assert space.metric == ("kl" if space.datasets == TOY_DATASETS else "fid_gen")
    assert space.mode == "min" and space.description
    for dataset in space.datasets:
        d = design(space, dataset, budget)
        configs = d.validate()
        assert configs and all(c.dataset == dataset for c in configs)
        if not d.searched:
            assert len(configs) == d.trial_count


def test_ablation_regularizers_crosses_clipping_and_lambda_with_seeds():
    d = design(get("ablation_regularizers"), "8gaussians", "quick", seeds=(0, 1, 2))
    configs = d.validate()
    assert d.trial_count == len(configs) == 2 * 4 * 3
    assert {(c.clip, c.responsibility_weight, c.seed) for c in configs} == {
        (clip, lam, seed) for clip in ("none", "adaptive") for lam in (0.0, 1.0, 10.0, 100.0) for seed in (0, 1, 2)
    }
    assert all(c.prior == "vamp_to_mog" and c.learnable_weights and c.prior_in_game for c in configs)
    grid = d.param_space()
    assert grid["seed"] == tune.grid_search([0, 1, 2]) and grid["clip"] == tune.grid_search(["none", "adaptive"])


def test_ablation_priors_is_the_papers_table_of_eight_configurations():
    configs = design(get("ablation_priors"), "2spirals", "paper").validate()
    assert len(configs) == 8 * 5 and {c.seed for c in configs} == set(range(5))
    rows = {
        (c.model, c.prior, c.num_components, c.learnable_weights, c.prior_in_game, c.converts_to_mog, c.clip_active)
        for c in configs
        if c.seed == 0
    }
    assert len(rows) == 8
    vae = [c for c in configs if c.model == "vae"]
    assert all(c.warmup == c.iterations and not c.converts_to_mog for c in vae)  # never converted to a MoG
    assert {(c.beta_rec, c.beta_kl) for c in vae} == {(1.0, 0.05)}  # the VAE's 2spirals betas
    mog = [c for c in configs if c.prior == "vamp_to_mog"]
    assert len(mog) == 4 * 5 and all(c.num_components == 64 and c.converts_to_mog for c in mog)
    assert all(c.clip_active == c.prior_in_game for c in mog)  # clipping takes effect with IP only
    assert all(c.num_components == 1 for c in configs if c.prior == "standard")
    assert all(c.responsibility_weight == 0.0 for c in configs)


@pytest.mark.parametrize("budget", BUDGETS)
def test_the_reproduction_spaces_run_the_papers_protocol(budget):
    priors = design(get("ablation_priors"), "8gaussians", budget).validate()
    images = design(get("ablation_images"), "digits", budget).validate()
    assert {c.protocol for c in priors + images} == {"paper"}
    for name in ("ablation_priors", "ablation_images"):
        module = importlib.import_module(f"search_spaces.{name}")
        assert "paper protocol" in get(name).description and "`paper` protocol" in module.__doc__
    # the paper protocol scores the checkpoints at metric_epochs: smoke and demo have none, the space adds epoch 1
    expected = {"smoke": (1,), "demo": (1,), "quick": (5, 9), "paper": (0, 80, 120, 160, 200, 219)}[budget]
    assert {c.metric_epochs for c in images} == {expected}
    clean = design(get("ablation_images"), "digits", budget, fixed={"protocol": "clean", "metric_epochs": [2]})
    assert {(c.protocol, c.metric_epochs) for c in clean.validate()} == {("clean", (2,))}  # --set wins


def test_each_ablation_configuration_has_a_beta_grid_of_the_same_configuration():
    """ablation_priors --betas-from finds a variant's grid runs by configuration: the grids run the same ones."""
    from study.betas_from import CONFIGURATION

    ablation = design(get("ablation_priors"), "rings", "quick", seeds=(0,))
    study = ablation.study_config()
    grids = [design(get(name), "rings", "quick") for name in ("betas_grid", "betas_grid_vae")]
    assert sorted(v for g in grids for v in g.space.variants) == sorted(ablation.space.variants)
    for grid in grids:
        for variant in grid.space.variants:
            point = next(p for p in grid.grid_points() if p["variant"] == variant)
            ours = resolve_trial(study, {"variant": variant, "seed": 0}).to_dict()
            theirs = resolve_trial(grid.study_config(), point).to_dict()
            assert {k: ours[k] for k in CONFIGURATION} == {k: theirs[k] for k in CONFIGURATION}, variant


def test_ablation_images_is_the_papers_image_grid_with_standard_at_lambda_0_only():
    d = design(get("ablation_images"), "cifar10", "paper")
    configs = d.validate()
    assert d.trial_count == len(configs) == (1 + 2 * 2 * 2 * 4) * 3 and {c.seed for c in configs} == {0, 1, 2}
    rows = {
        (c.prior, c.num_components, c.learnable_weights, c.prior_in_game, c.responsibility_weight)
        for c in configs
        if c.seed == 0
    }
    assert len(rows) == 33
    assert {r for r in rows if r[0] == "standard"} == {("standard", 1, True, True, 0.0)}
    assert {r for r in rows if r[0] != "standard"} == {
        ("vamp_to_mog", k, lc, ip, lam)
        for k in (10, 100)
        for lc in (False, True)
        for ip in (False, True)
        for lam in (0.0, 1.0, 10.0, 100.0)
    }
    assert all(c.model == "sintro" and c.clip == "adaptive" and c.epochs == 220 and c.z_dim == 128 for c in configs)
    assert all(c.clip_active == c.prior_in_game for c in configs if c.prior == "vamp_to_mog")
    # Tune runs the 33 points (each with the 3 seeds) of the 9 x 4 product grid
    presets = d.preset_points()
    assert len(presets) == 33 and {"variant": "standard", "responsibility_weight": 0.0} in presets
    assert {"variant": "standard", "responsibility_weight": 1.0} not in presets
    assert d.param_space()["responsibility_weight"] == tune.grid_search([0.0, 1.0, 10.0, 100.0])
    # without Inception weights the study measures (and names) the classifier's Frechet distance
    assert d.metric == "fd_classifier_gen"
    assert design(get("ablation_images"), "mnist", "smoke", fixed={"inception_weights": "/w.pth"}).metric == "fid_gen"
    one = design(get("ablation_images"), "digits", "smoke", seeds=(0, 1), fixed={"variant": "standard"})
    assert one.trial_count == 2 and one.preset_points() == [{"variant": "standard", "responsibility_weight": 0.0}]
    full = design(get("ablation_images"), "digits", "smoke", fixed={"variant": "mog-K10-LC-IP"})
    assert full.trial_count == 12 and full.preset_points() is None  # a plain product: Tune's grid as it is
    with pytest.raises(SpaceError, match="runs on mnist, fmnist, cifar10, digits"):
        design(get("ablation_images"), "8gaussians", "smoke")


def test_narrow_must_name_a_variant_and_values_of_a_grid_axis():
    grid = {"responsibility_weight": [0.0, 1.0]}
    for narrow, message in [
        ({"other": {"responsibility_weight": [0.0]}}, "unknown variant 'other'"),
        ({"a": {"lr": [0.1]}}, r"narrow\['a'\]\['lr'\] = \[0.1\] must be some of"),
        ({"a": {"responsibility_weight": [5.0]}}, "must be some of the grid axis"),
    ]:
        space = SearchSpace(name="x", description="x", variants={"a": {}}, grid=grid, narrow=narrow)
        with pytest.raises(SpaceError, match=message):
            design(space, "8gaussians", "smoke")


def test_betas_grid_is_the_papers_grid_with_beta_neg_a_multiple_of_beta_kl():
    configs = design(get("betas_grid"), "8gaussians", "paper", fixed={"variant": "sintro-mog-LC-IP"}).validate()
    assert len(configs) == 6 * 7 * 5 and len(design(get("betas_grid"), "8gaussians", "paper").validate()) == 5 * 210
    assert {c.beta_rec for c in configs} == {0.05, 0.2, 0.3, 0.4, 0.8, 1.0}
    assert {c.beta_kl for c in configs} == {0.05, 0.1, 0.2, 0.3, 0.5, 0.8, 1.0}
    assert all(c.beta_neg in {round(m * c.beta_kl, 3) for m in range(1, 6)} for c in configs)
    assert len({(c.beta_rec, c.beta_kl, c.beta_neg) for c in configs}) == 210
    vae = design(get("betas_grid_vae"), "8gaussians", "paper").validate()
    assert len(vae) == 3 * 81 and all(c.model == "vae" and c.warmup == c.iterations for c in vae)


def test_derived_beta_neg_is_rounded_to_three_decimals():
    study = design(get("betas"), "8gaussians", "smoke").study_config()
    config = resolve_trial(study, {"beta_rec": 0.3, "beta_kl": 0.1234567, "beta_neg_multiple": 3, "seed": 0})
    assert config.beta_neg == 0.37 and config.beta_kl == 0.1234567


def test_searched_spaces_are_optuna_spaces_and_clipping_is_conditional():
    for name in ("betas", "mixture_components", "clipping"):
        assert get(name).searched
    for name in ("ablation_regularizers", "ablation_priors", "betas_grid", "betas_grid_vae"):
        assert not get(name).searched
    points = design(get("clipping"), "8gaussians", "quick").example_points(draws=64)
    assert {p["clip"] for p in points} == {"none", "adaptive", "fixed"}
    for p in points:
        assert ("clip_logvar_min" in p) == (p["clip"] == "fixed") == ("clip_logvar_max" in p)
        assert ("clip_sharpness" in p) == (p["clip"] != "none")
    k = design(get("mixture_components"), "8gaussians", "quick").example_points(draws=0)
    assert {p["num_components"] for p in k} == {1, 2, 4, 8, 16, 32, 64, 128}


def test_set_collapses_an_axis_and_bad_values_fail_before_any_trial():
    d = design(get("ablation_regularizers"), "8gaussians", "smoke", fixed={"clip": "adaptive"})
    assert d.trial_count == 4 and "clip" not in d.param_space()
    assert all(c.clip == "adaptive" for c in d.validate())
    d = design(get("ablation_priors"), "8gaussians", "smoke", seeds=(0,), fixed={"variant": "sintro-mog-LC-IP"})
    assert d.trial_count == 1
    with pytest.raises(SpaceError, match="unknown variant 'sintro-mogg'"):
        design(get("ablation_priors"), "8gaussians", "smoke", fixed={"variant": "sintro-mogg"})
    with pytest.raises(SpaceError, match=r"beta_rec = -1\.0 is out of range"):
        design(get("betas"), "8gaussians", "smoke", fixed={"beta_rec": -1.0}).validate()
    with pytest.raises(SpaceError, match=r"unknown clip 'sometimes' \(expected: none, adaptive, fixed\)"):
        design(get("mixture_components"), "8gaussians", "smoke", fixed={"clip": "sometimes"}).validate()
    with pytest.raises(SpaceError, match="conditionally"):
        design(get("clipping"), "8gaussians", "smoke", fixed={"clip": "fixed"})
    with pytest.raises(SpaceError, match="--seeds"):
        design(get("betas"), "8gaussians", "smoke", fixed={"seed": 3})


def test_seeds_samples_and_datasets_are_checked():
    with pytest.raises(SpaceError, match="at one seed"):
        design(get("betas"), "8gaussians", "smoke", seeds=(0, 1))
    with pytest.raises(SpaceError, match="--samples applies to searched spaces"):
        design(get("ablation_regularizers"), "8gaussians", "smoke", samples=4)
    with pytest.raises(SpaceError, match="repeat"):
        design(get("ablation_regularizers"), "8gaussians", "smoke", seeds=(1, 1))
    with pytest.raises(SpaceError, match="unknown dataset 'moons'"):
        design(get("betas"), "moons", "smoke")
    with pytest.raises(SpaceError, match="runs on 8gaussians, 2spirals, checkerboard, rings"):
        design(get("betas"), "mnist", "smoke")
    assert design(get("betas"), "8gaussians", "smoke", samples=5).trial_count == 5


def test_a_space_checks_its_own_declaration():
    with pytest.raises(SpaceError, match="unknown metric 'fid'"):
        design(SearchSpace(name="x", description="x", metric="fid"), "8gaussians", "smoke")
    with pytest.raises(SpaceError, match="either a grid or searched"):
        design(
            SearchSpace(name="x", description="x", grid={"lr": [1e-3]}, search={"beta_kl": tune.uniform(0, 1)}),
            "8gaussians",
            "smoke",
        )
    with pytest.raises(SpaceError, match="has no values"):
        design(SearchSpace(name="x", description="x", grid={"lr": []}), "8gaussians", "smoke")
    with pytest.raises(SpaceError, match=r"budget_base names unknown budget\(s\) \['fast'\]"):
        design(SearchSpace(name="x", description="x", budget_base={"fast": {}}), "8gaussians", "smoke")


def test_spaces_are_plain_data_that_cross_the_ray_boundary():
    import pickle

    for space in search_spaces.SPACES.values():
        d = design(space, space.datasets[0], "smoke")
        study = pickle.loads(pickle.dumps(d.study_config()))
        assert resolve_trial(study, {"seed": 0, **d.grid_points()[0]} if not d.searched else {"seed": 0})


NEW_SPACE = '''"""The soft clip's sharpness against no clipping, 2 seeds."""

from search_spaces.space import SearchSpace

SPACE = SearchSpace(
    name="ablation_sharpness",
    description="learnable MoG: clip none vs adaptive at sharpness 5, 10, 20, seeds 0-1",
    base={"prior": "vamp_to_mog"},
    variants={"no-clip": {"clip": "none"}, "clip": {"clip": "adaptive"}},
    grid={"clip_sharpness": [5.0, 10.0, 20.0]},
    narrow={"no-clip": {"clip_sharpness": [10.0]}},
    seeds=(0, 1),
    baseline={"variant": "no-clip"},
)
'''


def test_a_new_space_is_one_new_file(tmp_path):
    """A copy of search_spaces/ plus one new module, nothing else edited: study.run lists and dry-runs it, and
    analysis compares its rows with the baseline the module declares."""
    import shutil
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    shutil.copytree(root / "search_spaces", tmp_path / "search_spaces", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "search_spaces" / "ablation_sharpness.py").write_text(NEW_SPACE)
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{root}"}
    probe = (
        "from study.run import main; from analysis.tables import default_baseline; import pandas as pd; "
        "import search_spaces; print(search_spaces.__file__); main(['--list']); "
        "main(['--space', 'ablation_sharpness', '--budget', 'smoke', '--dry-run']); "
        "runs = pd.DataFrame({'variant': ['no-clip', 'clip'], 'clip_sharpness': [10.0, 5.0]}); "
        "print('baseline', default_baseline('ablation_sharpness', ['variant', 'clip_sharpness'], runs))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.splitlines()
    assert lines[0] == str(tmp_path / "search_spaces" / "__init__.py")
    assert any(line.startswith("ablation_sharpness ") and "grid, 8 trials" in line for line in lines)
    assert "space ablation_sharpness:" in out.stdout and "trial   7:" in out.stdout
    assert "baseline {'variant': 'no-clip'}" in out.stdout
