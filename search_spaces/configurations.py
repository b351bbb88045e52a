"""The paper's eight 2D configurations (its Table 1), defined once: `ablation_priors` runs them and the β grids
search each one's betas, so that every ablation row can take the betas of its own grid runs (`--betas-from`).

Clipping is on (it takes effect with IP only), λ = 0, and the protocol is `paper` (the paper code's quirks, e.g. its
VampPrior → MoG weight reset) in all of them, grids included: the betas are chosen under the training the table
runs. A VAE with a VampPrior is never converted to a MoG (its whole run is warm-up).
"""

from search_spaces.space import Selection

BASE = {"clip": "adaptive", "responsibility_weight": 0.0, "protocol": "paper"}
# The paper's choice of each configuration's betas from its grid: the lowest seed-mean kl (the grids run seed 0).
BEST_BETA = Selection("beta", ("beta_rec", "beta_kl", "beta_neg", "beta_neg_multiple"), "kl")
_MOG = {"model": "sintro", "prior": "vamp_to_mog"}
_VAMP = {"model": "vae", "prior": "vamp"}

VAE = {
    "vae-standard": {"model": "vae", "prior": "standard"},
    "vae-vamp": {**_VAMP, "learnable_weights": False},
    "vae-vamp-LC": {**_VAMP, "learnable_weights": True},
}
SINTRO = {
    "sintro-standard": {"model": "sintro", "prior": "standard"},
    "sintro-mog": {**_MOG, "learnable_weights": False, "prior_in_game": False},
    "sintro-mog-IP": {**_MOG, "learnable_weights": False, "prior_in_game": True},
    "sintro-mog-LC": {**_MOG, "learnable_weights": True, "prior_in_game": False},
    "sintro-mog-LC-IP": {**_MOG, "learnable_weights": True, "prior_in_game": True},
}
