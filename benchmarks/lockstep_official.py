"""Step-by-step parity with the official Soft-IntroVAE 2D code: its training, run unmodified from your checkout, and
priorstudy's Game fed the same initial weights, batches and noise; prints how far the parameters drift apart.

    python benchmarks/lockstep_official.py --official PATH/soft-intro-vae-pytorch [--seed 0] [--iterations 400]
                                           [--warmup 100] [--batch 256] [--every 10] [--float32]

PATH is a clone of github.com/taldatech/soft-intro-vae-pytorch (not part of this project). Its
`soft_intro_vae_2d/train_soft_intro_vae_2d.py` runs as it is, on 8Gaussians with its recommended betas; this script
only wraps the module's data sampler, `reparameterize` and the fakes' `torch.randn` to record what they return, and
snapshots the model every `--every` iterations. priorstudy then replays the recording through `core.game.Game`
(N(0,I), analytic KL, the official code's shared fake noise). In float64 (the default: batches are cast, nothing else)
the two agree to rounding, which the game amplifies slowly; a different update rule parts them by orders of magnitude
within a few steps. Runs in a scratch folder (the official code writes its figures and logs to the working directory).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def record_official(official, seed: int, iterations: int, warmup: int, batch: int, every: int, double: bool):
    """Run the official training unmodified; return its model and what it drew: batches, reparameterisation noise
    (in call order), the fakes' noise, parameter snapshots {iteration: [tensors]}."""
    rec = {"batches": [], "eps": [], "noise": [], "snaps": {}, "training": True}
    holder = {}
    original_init, original_next = official.SoftIntroVAESimple.__init__, official.ToyDataset.next_batch
    original_randn = torch.randn

    def init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        holder["model"] = self

    def next_batch(self, batch_size=64, device=None, sig=0.02):
        out = original_next(self, batch_size, device, sig)
        out = out.double() if double else out
        if rec["training"] and batch_size == batch and len(rec["batches"]) < iterations:
            if len(rec["batches"]) % every == 0:
                rec["snaps"][len(rec["batches"])] = [p.detach().clone() for p in holder["model"].parameters()]
            rec["batches"].append(out.clone())
        return out

    def reparameterize(mu, logvar):
        eps = torch.randn_like(mu)
        if rec["training"]:
            rec["eps"].append(eps.clone())
        return mu + eps * torch.exp(0.5 * logvar)

    def randn(*args, **kwargs):
        out = original_randn(*args, **kwargs)
        if rec["training"] and kwargs.get("size") == (batch, 2):
            rec["noise"].append(out.clone())
        return out

    def stop_recording(function):  # the final figure and evaluation draw batches and noise of their own
        def wrapped(*args, **kwargs):
            rec["training"] = False
            return function(*args, **kwargs)

        return wrapped

    official.SoftIntroVAESimple.__init__, official.ToyDataset.next_batch = init, next_batch
    official.reparameterize = reparameterize
    official.calculate_sample_kl = stop_recording(official.calculate_sample_kl)
    official.plot_samples_density = stop_recording(official.plot_samples_density)
    torch.randn = randn
    try:
        model = official.train_soft_intro_vae_toy(
            z_dim=2,
            lr_e=2e-4,
            lr_d=2e-4,
            batch_size=batch,
            n_iter=iterations,
            num_vae=warmup,
            save_interval=10**9,
            recon_loss_type="mse",
            beta_kl=0.3,
            beta_rec=0.2,
            beta_neg=0.9,
            test_iter=10**9,
            seed=seed,
            scale=1,
            device=torch.device("cpu"),
            dataset="8Gaussians",
        )
    finally:
        torch.randn = original_randn
    rec["snaps"][iterations] = [p.detach().clone() for p in model.parameters()]
    return model, rec


def replay(official, rec, seed: int, iterations: int, warmup: int, batch: int):
    """priorstudy's Game from the official initial weights on the recorded batches and noise; yields (iteration,
    relative parameter distance ‖ours − official‖ / ‖official‖) at every snapshot."""
    from core.config import resolve_config
    from core.game import DecoderNoise, EncoderNoise, Game, WarmupNoise
    from core.task import make_task

    torch.manual_seed(seed)  # the official code seeds torch, then builds its model: the same initial weights
    initial = official.SoftIntroVAESimple(x_dim=2, zdim=2, n_layers=3, num_hidden=256)
    config = resolve_config(
        "8gaussians",
        "paper",
        prior="standard",
        kl_estimator="analytic",
        iterations=iterations,
        warmup=warmup,
        batch_size=batch,
        seed=seed,
    )
    game = Game(config, make_task(config, torch.device("cpu")), torch.device("cpu"))
    ours = [*game.encoder.parameters(), *game.decoder.parameters()]
    used = [i for i, (name, _) in enumerate(initial.named_parameters()) if "loggamma" not in name]  # unused there
    with torch.no_grad():
        for mine, theirs in zip(ours, [list(initial.parameters())[i] for i in used]):
            mine.copy_(theirs)
    eps, noise = iter(rec["eps"]), iter(rec["noise"])
    index = torch.zeros(batch, dtype=torch.long)
    for it in range(iterations + 1):
        if it in rec["snaps"]:
            theirs = [rec["snaps"][it][i] for i in used]
            num = sum(((a.detach() - b) ** 2).sum() for a, b in zip(ours, theirs))
            yield it, math.sqrt(num / sum((b**2).sum() for b in theirs))
        if it == iterations:
            return
        x = rec["batches"][it]
        game.set_learning_rates(it)
        if it == warmup:
            game.start_game()
        if it < warmup:
            e = next(eps)
            game.draw_warmup_noise = lambda x, e=e: WarmupNoise(e, None)
            game.warmup_step(x)
            continue
        # the official order: fakes' noise; E step: real, fake, reconstruction; D step: reconstruction, fake
        fake_noise = next(noise)
        real, fake, recon, d_recon, d_fake = (next(eps) for _ in range(5))
        encoder = EncoderNoise(real, None, None, (index, fake_noise), torch.cat([fake, recon]), None)
        decoder = DecoderNoise((index, fake_noise), torch.cat([d_recon, d_fake]), None, None)
        game.draw_encoder_noise = lambda x, drawn=encoder: drawn
        game.draw_decoder_noise = lambda x, drawn=decoder: drawn
        game.game_step(x)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--official", type=Path, required=True, help="a clone of soft-intro-vae-pytorch")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--iterations", type=int, default=400)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--every", type=int, default=10)
    parser.add_argument("--float32", action="store_true", help="as the official code runs (rounding grows faster)")
    args = parser.parse_args(argv)
    source = args.official / "soft_intro_vae_2d" / "train_soft_intro_vae_2d.py"
    if not source.is_file():
        print(f"error: {source} not found (--official must be a clone of soft-intro-vae-pytorch)", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    if not args.float32:
        torch.set_default_dtype(torch.float64)
    sys.path.insert(0, str(source.parent))
    os.environ.setdefault("MPLCONFIGDIR", tempfile.mkdtemp())
    os.chdir(tempfile.mkdtemp(prefix="lockstep-"))
    import train_soft_intro_vae_2d as official

    start = time.perf_counter()
    _, rec = record_official(
        official, args.seed, args.iterations, args.warmup, args.batch, args.every, double=not args.float32
    )
    print(
        f"official run: {args.iterations} iterations ({args.warmup} warm-up), batch {args.batch}, seed "
        f"{args.seed}, {'float32' if args.float32 else 'float64'}, {time.perf_counter() - start:.0f} s"
    )
    print("iteration   ‖θ_priorstudy − θ_official‖ / ‖θ_official‖")
    for it, distance in replay(official, rec, args.seed, args.iterations, args.warmup, args.batch):
        phase = "warm-up" if it < args.warmup else "game"
        print(f"{it:>9}   {distance:.3e}   {phase}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
