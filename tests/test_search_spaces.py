"""Search spaces: the registry, what each space varies, and validation against core's config before any trial."""

from __future__ import annotations

import pytest
from ray import tune

import search_spaces
from core.config import BUDGETS, TOY_DATASETS
from search_spaces import SPACES, SpaceError, design, get
from search_spaces.space import SearchSpace, resolve_trial

REQUIRED = ("ablation_regularizers", "ablation_priors", "betas", "betas_grid", "mixture_components", "clipping")


def test_registry_holds_the_required_spaces_and_names_the_known_ones_on_a_typo():
    assert set(REQUIRED) <= set(SPACES)
    with pytest.raises(SpaceError, match=r"unknown search space 'betaz' \(known: ablation_regularizers, .*clipping"):
        get("betaz")


@pytest.mark.parametrize("name", sorted(SPACES))
@pytest.mark.parametrize("budget", BUDGETS)
def test_every_space_validates_on_every_2d_dataset(name, budget):
    space = get(name)
    assert space.metric == "kl" and space.mode == "min" and space.description
    for dataset in TOY_DATASETS:
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
        (clip, lam, seed) for clip in ("none", "adaptive") for lam in (0.0, 1.0, 10.0, 100.0) for seed in (0, 1, 2)}
    assert all(c.prior == "vamp_to_mog" and c.learnable_weights and c.prior_in_game for c in configs)
    grid = d.param_space()
    assert grid["seed"] == tune.grid_search([0, 1, 2]) and grid["clip"] == tune.grid_search(["none", "adaptive"])


def test_ablation_priors_is_the_papers_table_of_eight_configurations():
    configs = design(get("ablation_priors"), "2spirals", "paper").validate()
    assert len(configs) == 8 * 5 and {c.seed for c in configs} == set(range(5))
    rows = {(c.model, c.prior, c.num_components, c.learnable_weights, c.prior_in_game, c.converts_to_mog,
             c.clip_active) for c in configs if c.seed == 0}
    assert len(rows) == 8
    vae = [c for c in configs if c.model == "vae"]
    assert all(c.warmup == c.iterations and not c.converts_to_mog for c in vae)  # never converted to a MoG
    assert {(c.beta_rec, c.beta_kl) for c in vae} == {(1.0, 0.05)}  # the VAE's 2spirals betas
    mog = [c for c in configs if c.prior == "vamp_to_mog"]
    assert len(mog) == 4 * 5 and all(c.num_components == 64 and c.converts_to_mog for c in mog)
    assert all(c.clip_active == c.prior_in_game for c in mog)  # clipping takes effect with IP only
    assert all(c.num_components == 1 for c in configs if c.prior == "standard")
    assert all(c.responsibility_weight == 0.0 for c in configs)


def test_betas_grid_is_the_papers_grid_with_beta_neg_a_multiple_of_beta_kl():
    configs = design(get("betas_grid"), "8gaussians", "paper").validate()
    assert len(configs) == 6 * 7 * 5
    assert {c.beta_rec for c in configs} == {0.05, 0.2, 0.3, 0.4, 0.8, 1.0}
    assert {c.beta_kl for c in configs} == {0.05, 0.1, 0.2, 0.3, 0.5, 0.8, 1.0}
    assert all(c.beta_neg in {round(m * c.beta_kl, 3) for m in range(1, 6)} for c in configs)
    assert len({(c.beta_rec, c.beta_kl, c.beta_neg) for c in configs}) == 210
    vae = design(get("betas_grid_vae"), "8gaussians", "paper").validate()
    assert len(vae) == 81 and all(c.model == "vae" and c.warmup == c.iterations for c in vae)


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
        design(SearchSpace(name="x", description="x", grid={"lr": [1e-3]}, search={"beta_kl": tune.uniform(0, 1)}),
               "8gaussians", "smoke")
    with pytest.raises(SpaceError, match="has no values"):
        design(SearchSpace(name="x", description="x", grid={"lr": []}), "8gaussians", "smoke")


def test_spaces_are_plain_data_that_cross_the_ray_boundary():
    import pickle

    for space in search_spaces.SPACES.values():
        d = design(space, "8gaussians", "smoke")
        study = pickle.loads(pickle.dumps(d.study_config()))
        assert resolve_trial(study, {"seed": 0, **d.grid_points()[0]} if not d.searched else {"seed": 0})
