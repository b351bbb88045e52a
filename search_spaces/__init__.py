"""Named search spaces, one module each. `get(name)` returns a space; an unknown name lists the known ones."""

from core.config import did_you_mean
from search_spaces import (
    ablation_images,
    ablation_priors,
    ablation_regularizers,
    betas,
    betas_grid,
    betas_grid_vae,
    clipping,
    learnable_prior,
    mixture_components,
)
from search_spaces.space import SearchSpace, SpaceError, StudyDesign, design, resolve_trial

SPACES: dict[str, SearchSpace] = {
    module.SPACE.name: module.SPACE
    for module in (
        learnable_prior, ablation_regularizers, ablation_priors, betas, betas_grid, betas_grid_vae,
        mixture_components, clipping, ablation_images,
    )
}


def get(name: str) -> SearchSpace:
    if name not in SPACES:
        raise SpaceError(f"unknown search space {name!r} ({did_you_mean([name], SPACES)}known: {', '.join(SPACES)})")
    return SPACES[name]


__all__ = ["SPACES", "SearchSpace", "SpaceError", "StudyDesign", "design", "get", "resolve_trial"]
