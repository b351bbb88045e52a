"""analysis on a real MLflow store (sqlite in tmp) whose runs are logged through MLflow's own client in the layout
study/tracking.py writes: the resolved config as params, tags, metrics as step series, figure.png / metrics.json /
samples.npy as artifacts; failed trials closed FAILED with a failure_reason. No Ray, no training."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import pytest
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient
from scipy import stats

from analysis import figures, tables
from analysis.loading import Study, StudyNotFound, load_study, parse_param, typed_column
from analysis.report import build_table, main, write_report
from core.config import resolve_config

matplotlib.use("Agg")

STEPS = (20, 40, 60)
REGULARIZERS = "ablation_regularizers-8gaussians-smoke"
# kl per (clip, λ) at seeds 0, 1, 2: (adaptive, 0) is the baseline shifted by +0.5 (a known difference),
# (none, 10) repeats the baseline exactly (no difference), (adaptive, 10) differs by less than its noise.
BASE_KL = (1.00, 1.03, 0.97)
KL = {
    ("none", 0.0): BASE_KL,
    ("adaptive", 0.0): tuple(v + 0.5 for v in BASE_KL),
    ("none", 10.0): BASE_KL,
    ("adaptive", 10.0): (0.90, 1.20, 1.05),
}


def _png(path: Path, shade: float) -> Path:
    import matplotlib.pyplot as plt

    plt.imsave(path, np.full((24, 60, 3), shade))
    return path


class StoreWriter:
    """Trials logged as study/tracking.py logs them (params_of: scalars as they are, the rest as str)."""

    def __init__(self, root: Path):
        self.root = root
        self.uri = f"sqlite:///{root}/mlruns.db"
        self.client = MlflowClient(tracking_uri=self.uri)
        self.files = root / "files"
        self.files.mkdir(parents=True, exist_ok=True)
        self.count = 0

    def study(self, name: str, space: str) -> tuple[str, dict[str, str]]:
        experiment = self.client.create_experiment(name, artifact_location=(self.root / "mlartifacts").as_uri())
        tags = {
            "space": space,
            "study": name,
            "dataset": "8gaussians",
            "budget": "smoke",
            "git_commit": "abc123",
            "project_version": "0.1.0",
            "study_id": f"sid{self.count:04d}",
        }
        return experiment, tags

    def trial(
        self,
        experiment: str,
        tags: dict[str, str],
        config: dict,
        series: dict[str, list[float]],
        status: str = "FINISHED",
        failure: str | None = None,
        extra_params: dict | None = None,
    ) -> str:
        self.count += 1
        trial_id = f"t{self.count:05d}"
        run = self.client.create_run(
            experiment,
            run_name=f"train_trial_{trial_id}",
            tags={
                **tags,
                "trial_id": trial_id,
                "trial_name": f"train_trial_{trial_id}",
                "device": "cpu, 1 thread",
                "hostname": "test",
            },
        )
        run_id = run.info.run_id
        params = {**config, **(extra_params or {})}
        now = int(time.time() * 1000)
        metrics = [
            Metric(key, float(value), now + i, step)
            for key, values in series.items()
            for i, (step, value) in enumerate(zip(STEPS, values))
            if not math.isnan(value)
        ]
        self.client.log_batch(run_id, params=[Param(k, str(v)) for k, v in params.items()], metrics=metrics)
        if status == "FINISHED":
            folder = self.files / trial_id
            folder.mkdir()
            _png(folder / "figure.png", 0.2 + 0.05 * (self.count % 10))
            (folder / "metrics.json").write_text(json.dumps({k: v[-1] for k, v in series.items()}))
            np.save(folder / "samples.npy", np.zeros((4, 2)))
            for name in ("figure.png", "metrics.json", "samples.npy"):
                self.client.log_artifact(run_id, str(folder / name))
        if failure is not None:
            self.client.set_tag(run_id, "failure_reason", failure)
        self.client.set_terminated(run_id, status=status)
        return run_id


def _series(kl: float, seed: int) -> dict[str, list[float]]:
    """Step series ending at the final values; gnelbo only at the end (NaN = not logged), as core reports it."""
    return {
        "kl": [kl + 2.0, kl + 1.0, kl],
        "jsd": [0.5, 0.4, 0.3 + 0.01 * seed],
        "sample_entropy_kl": [2.0, 1.9, 1.8],
        "gnelbo": [math.nan, math.nan, 1e-7 * (5 + seed)],
        "active_modes": [64, 40, 20 + seed],
        "loss_encoder": [3.0, 2.0, 1.0],
        "loss_decoder": [2.0, 1.5, 1.2],
        "iteration": list(STEPS),
        "in_game": [0, 1, 1],
    }


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> StoreWriter:
    writer = StoreWriter(tmp_path_factory.mktemp("store"))

    experiment, tags = writer.study(REGULARIZERS, "ablation_regularizers")
    base = dict(model="sintro", prior="vamp_to_mog", learnable_weights=True, prior_in_game=True)
    for (clip, weight), values in KL.items():
        for seed, kl in enumerate(values):
            config = resolve_config("8gaussians", "smoke", **base, clip=clip, responsibility_weight=weight, seed=seed)
            writer.trial(experiment, tags, config.to_dict(), _series(kl, seed))
    # A diverged trial (failed with partial history) and a trial closed by TrialRunStatus before it logged anything.
    config = resolve_config("8gaussians", "smoke", **base, clip="adaptive", responsibility_weight=10.0, seed=3)
    writer.trial(
        experiment,
        tags,
        config.to_dict(),
        {"kl": [9.0]},
        status="FAILED",
        failure="diverged: training diverged at iteration 31 (loss_encoder = nan)",
    )

    experiment, tags = writer.study("searched-betas", "betas")
    rng = np.random.default_rng(0)
    for _ in range(12):
        beta_rec, beta_kl, multiple = rng.uniform(0.05, 1.0), rng.uniform(0.05, 1.0), int(rng.integers(1, 6))
        config = resolve_config(
            "8gaussians",
            "smoke",
            model="sintro",
            beta_rec=beta_rec,
            beta_kl=beta_kl,
            beta_neg=round(multiple * beta_kl, 3),
            seed=0,
        )
        writer.trial(
            experiment,
            tags,
            config.to_dict(),
            _series(10 * beta_kl + 0.1 * beta_rec, 0),
            extra_params={"beta_neg_multiple": multiple},
        )

    experiment, tags = writer.study("all-failed", "ablation_regularizers")
    for seed in range(2):
        config = resolve_config("8gaussians", "smoke", clip="none", seed=seed)
        writer.trial(experiment, tags, config.to_dict(), {}, status="FAILED", failure="RuntimeError: out of memory")

    experiment, tags = writer.study("unknown-space", "a_space_this_checkout_lacks")
    for variant, prior in (("std", "standard"), ("mog", "vamp_to_mog")):
        for seed in range(2):
            config = resolve_config("8gaussians", "smoke", prior=prior, seed=seed)
            writer.trial(
                experiment, tags, config.to_dict(), _series(1.0 + seed, seed), extra_params={"variant": variant}
            )
    return writer


@pytest.fixture(scope="module")
def study(store) -> Study:
    return load_study(REGULARIZERS, store.uri)


def test_param_strings_come_back_typed():
    assert [parse_param(v) for v in ("None", "True", "3", "0.5", "1e-08", "[20, 30]", "adaptive")] == [
        None,
        True,
        3,
        0.5,
        1e-8,
        "[20, 30]",
        "adaptive",
    ]
    assert typed_column(["0", "10.0", "1"]).tolist() == [0.0, 10.0, 1.0]  # --set gives '0', the grid '0.0'
    assert str(typed_column(["1", "None"]).dtype) == "Int64"
    assert typed_column(["None", "-3.5"]).isna().tolist() == [True, False]
    assert typed_column(["1", "x"]).tolist() == ["1", "x"]


def test_one_row_per_trial_with_the_study_factors(study):
    runs = study.runs
    assert len(runs) == 13 and runs["trial_id"].is_unique
    assert study.factors == ["clip", "responsibility_weight"]  # the space's axes; seed is not a factor
    assert study.levels == {"clip": ["none", "adaptive"], "responsibility_weight": [0.0, 10.0]}  # the grid's order
    assert (study.metric, study.mode, study.searched, study.space) == ("kl", "min", False, "ablation_regularizers")
    assert study.counts() == {"total": 13, "finished": 12, "stopped_early": 0, "failed": 1, "running": 0}
    failed = runs[runs["state"] == "failed"].iloc[0]
    assert failed["failure_reason"].startswith("diverged: training diverged")
    assert (failed["clip"], failed["responsibility_weight"], failed["seed"]) == ("adaptive", 10.0, 3)
    assert failed["kl"] == 9.0
    done = runs[runs["state"] == "finished"]
    for (clip, weight), values in KL.items():
        part = done[(done["clip"] == clip) & (done["responsibility_weight"] == weight)].sort_values("seed")
        assert part["seed"].tolist() == [0, 1, 2] and part["kl"].tolist() == pytest.approx(values)
    assert runs["iterations"].eq(60).all() and runs["learnable_weights"].all()  # typed config columns
    assert set(study.metrics) >= {"kl", "jsd", "gnelbo", "sample_entropy_kl", "active_modes", "loss_encoder"}
    assert "iteration" not in study.metrics and "in_game" not in study.metrics
    assert runs["betas_from"].isna().all()  # the tag of a trial whose betas came from a grid study


def test_history_is_long_and_parquet_round_trips(study, tmp_path):
    hist = study.history
    assert set(hist.columns) == {"run_id", "trial_id", "metric", "step", "value", "timestamp"}
    one = hist[(hist["run_id"] == study.finished["run_id"].iloc[0]) & (hist["metric"] == "kl")]
    assert one["step"].tolist() == list(STEPS)
    assert one["value"].iloc[-1] == pytest.approx(study.finished["kl"].iloc[0])
    assert len(hist[hist["metric"] == "gnelbo"]) == 12  # logged once, at the end

    study.save(tmp_path)
    again = Study.from_folder(tmp_path)
    pd.testing.assert_frame_equal(again.runs, study.runs, check_dtype=False)
    pd.testing.assert_frame_equal(again.history, study.history, check_dtype=False)
    assert again.factors == study.factors and again.counts() == study.counts()


def test_table_mean_and_std_are_pandas_own(study):
    metrics = ["kl", "jsd", "gnelbo"]
    table = tables.ablation_table(study.runs, study.factors, metrics, levels=study.levels)
    done = study.runs[study.runs["state"] == "finished"]
    grouped = done.groupby(study.factors)[metrics]
    mean, std, count = grouped.mean(), grouped.std(ddof=0), grouped.count()
    assert len(table.stats) == 4
    for _, row in table.stats.iterrows():
        key = (row["clip"], row["responsibility_weight"])
        for m in metrics:
            assert row[f"{m}_mean"] == pytest.approx(mean.loc[key, m], rel=1e-12)
            assert row[f"{m}_std"] == pytest.approx(std.loc[key, m], rel=1e-12, abs=1e-15)
            assert row[f"{m}_sem"] == pytest.approx(std.loc[key, m] / math.sqrt(count.loc[key, m]), abs=1e-15)
            assert row[f"{m}_n"] == count.loc[key, m] == 3
    failed = table.stats[(table.stats["clip"] == "adaptive") & (table.stats["responsibility_weight"] == 10.0)]
    assert failed["failed"].tolist() == [1] and failed["runs"].tolist() == [4] and failed["n"].tolist() == [3]
    assert list(table.stats.index) == [
        "clip=none, responsibility_weight=0",
        "clip=none, responsibility_weight=10",
        "clip=adaptive, responsibility_weight=0",
        "clip=adaptive, responsibility_weight=10",
    ]


def test_baseline_comparison_finds_the_known_difference_only(study):
    table = build_table(study)  # default baseline of the space: clip=none, λ=0
    stats_ = table.stats
    assert table.baseline == "clip=none, responsibility_weight=0"
    shifted = stats_.loc["clip=adaptive, responsibility_weight=0"]
    identical = stats_.loc["clip=none, responsibility_weight=10"]
    noisy = stats_.loc["clip=adaptive, responsibility_weight=10"]
    assert shifted["kl_p_welch"] < 0.05 and shifted["kl_diff"] == pytest.approx(0.5)
    assert identical["kl_p_welch"] == pytest.approx(1.0) and identical["kl_diff"] == 0
    assert noisy["kl_p_welch"] > 0.05
    assert math.isnan(stats_.loc[table.baseline, "kl_p_welch"])
    assert table.significant("kl") == ["clip=adaptive, responsibility_weight=0"]
    markdown = table.to_markdown()
    assert "Welch's two-sided t-test" in markdown and "(baseline)" in markdown
    assert "Protocol: clean." in markdown and set(table.cells()["β (rec, kl, neg)"]) == {"0.2, 0.3, 0.9"}
    assert "1.50 ± 0.01*" in markdown  # the shifted row: marked as different from the baseline


def test_welch_p_value_matches_the_formula():
    """t = (ā − b̄)/√(s²_a/n_a + s²_b/n_b), Welch–Satterthwaite df, two-sided p = 2·sf(|t|)."""
    rng = np.random.default_rng(3)
    a, b = rng.normal(0.0, 1.0, 5), rng.normal(1.5, 3.0, 4)
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    t = (a.mean() - b.mean()) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    assert tables.welch(a, b) == pytest.approx(2 * stats.t.sf(abs(t), df), rel=1e-10)
    assert math.isnan(tables.welch(a[:1], b)) and math.isnan(tables.welch(np.ones(3), np.ones(3)))
    same = rng.normal(size=4)
    assert tables.welch(same, same.copy()) == pytest.approx(1.0)


def test_best_is_marked_per_column_and_formats_agree(study):
    table = build_table(
        study, metrics=["kl", "jsd", "sample_entropy_kl"], baseline="clip=none,responsibility_weight=10"
    )
    assert table.baseline == "clip=none, responsibility_weight=10"
    assert table.best("kl") == ["clip=none, responsibility_weight=0", "clip=none, responsibility_weight=10"]
    assert table.best("sample_entropy_kl") == []  # no direction: nothing marked
    cells = table.cells("std")
    assert cells.loc["clip=none, responsibility_weight=0", "kl ↓"].startswith("**1.00 ± 0.02**")
    assert cells.loc["clip=adaptive, responsibility_weight=10", "failed"] == "1"
    latex = table.to_latex()
    assert r"\textbf{1.00 $\pm$ 0.01}" in latex and r"\toprule" in latex and "responsibility\\_weight" in latex
    csv = pd.read_csv(__import__("io").StringIO(table.to_csv()))
    assert csv["kl_mean"].tolist() == pytest.approx(table.stats["kl_mean"].tolist())
    assert csv.loc[csv["is_baseline"], "configuration"].tolist() == [table.baseline]
    assert csv["kl_best"].sum() == 2 and csv["failed"].sum() == 1
    with pytest.raises(ValueError, match="none of the table's rows"):
        build_table(study, baseline="clip=fixed")


def test_selection_rules_keep_the_papers_choice():
    rows = []
    for prior, fids in (
        ("standard", {0.0: (50.0, 52.0)}),
        ("mog", {0.0: (40.0, 44.0), 10.0: (35.0, 45.0), 100.0: (38.0, 39.0)}),
    ):
        for weight, values in fids.items():
            for seed, fid in enumerate(values):
                rows.append(
                    {
                        "prior": prior,
                        "responsibility_weight": weight,
                        "seed": seed,
                        "state": "finished",
                        "fid_gen": fid,
                        "kl": 0.0,
                    }
                )
    rows.append(
        {"prior": "mog", "responsibility_weight": 100.0, "seed": 2, "state": "failed", "fid_gen": np.nan, "kl": np.nan}
    )
    runs = pd.DataFrame(rows)
    kept, factors, note = tables.select_best(runs, ["prior", "responsibility_weight"], "lambda")
    assert factors == ["prior", "responsibility_weight"] and "lowest seed-mean fid_gen" in note
    chosen = kept.groupby("prior")["responsibility_weight"].unique()
    assert chosen["standard"].tolist() == [0.0] and chosen["mog"].tolist() == [100.0]  # 38.5 < 40 = 40 < 42
    assert (kept["state"] == "failed").sum() == 1  # the chosen λ's failure stays counted

    beta = pd.DataFrame(
        [
            {"model": m, "beta_kl": b, "seed": 0, "state": "finished", "kl": kl}
            for m, b, kl in (("vae", 0.1, 3.0), ("vae", 0.5, 2.0), ("sintro", 0.1, 1.0), ("sintro", 0.5, 4.0))
        ]
    )
    kept, _, _ = tables.select_best(beta, ["model", "beta_kl"], "beta")
    assert dict(zip(kept["model"], kept["beta_kl"])) == {"vae": 0.5, "sintro": 0.1}
    with pytest.raises(ValueError, match="none of which this study varies"):
        tables.select_best(beta, ["model"], "beta")


def test_report_writes_every_figure_and_counts_failures(study, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    index = write_report(study, tmp_path)
    names = [
        "by_clip",
        "by_responsibility_weight",
        "heatmap_clip_x_responsibility_weight",
        "learning_curves",
        "training_losses",
        "active_modes",
        "densities",
    ]
    for name in names:
        for suffix in (".png", ".pdf"):
            path = tmp_path / "figures" / f"{name}{suffix}"
            assert path.is_file() and path.stat().st_size > 1000, path
    for name in (
        "runs.parquet",
        "history.parquet",
        "study.json",
        "ablation.md",
        "ablation_sem.tex",
        "ablation_std.tex",
        "ablation.csv",
    ):
        assert (tmp_path / name).stat().st_size > 0, name
    text = index.read_text()
    assert "trials: 13 — finished 12, failed 1" in text
    assert "train_trial_t00013" in text and "diverged: training diverged at iteration 31" in text
    assert "![densities](figures/densities.png)" in text
    assert len(pd.read_parquet(tmp_path / "runs.parquet")) == 13
    assert json.loads((tmp_path / "study.json").read_text())["counts"]["failed"] == 1


def test_searched_study_gets_an_importance_figure(store, tmp_path):
    study = load_study("searched-betas", store.uri)
    assert study.searched and study.factors == ["beta_rec", "beta_kl", "beta_neg_multiple"]
    scores = figures.importance(study.runs, study.factors, study.metric, study.mode)
    assert set(scores.index) == set(study.factors) and scores.sum() == pytest.approx(1.0)
    assert scores.index[0] == "beta_kl"  # kl = 10·β_kl + 0.1·β_rec
    paths = figures.save(figures.importance_plot(scores, "kl"), tmp_path, "importance")
    assert all(p.stat().st_size > 1000 for p in paths)


def test_factors_are_inferred_for_an_unknown_space(store):
    study = load_study("unknown-space", store.uri)
    # variant and prior vary, but the variant determines the prior (and num_components): one factor.
    assert study.factors == ["variant"] and study.levels == {"variant": ["mog", "std"]}
    assert len(study.runs) == 4 and study.metric == "kl"


def test_cli_errors_say_what_is_wrong(store, tmp_path, capsys):
    assert main(["--study", "no-such-study", "--tracking-uri", store.uri, "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert "no study named 'no-such-study'" in err and REGULARIZERS in err

    missing = tmp_path / "nowhere.db"
    assert main(["--study", "x", "--tracking-uri", f"sqlite:///{missing}"]) == 2
    assert "no MLflow store" in capsys.readouterr().err and not missing.exists()

    assert main(["--study", "all-failed", "--tracking-uri", store.uri, "--out", str(tmp_path / "b")]) == 1
    err = capsys.readouterr().err
    assert "no finished runs" in err and "2 failed" in err and "out of memory" in err
    assert not (tmp_path / "b").exists()

    with pytest.raises(StudyNotFound, match="study_id"):
        load_study(REGULARIZERS, store.uri, study_id="nope")


def image_ablation_runs(protocols=("clean",)) -> pd.DataFrame:
    """The image ablation's trials as analysis loads them (no Inception weights: fd_classifier_*):
    fd_classifier_gen falls with λ for the mixtures, best at λ = 10 for K = 100."""
    from search_spaces import design, get

    rows = []
    for protocol in protocols:
        for point in design(get("ablation_images"), "digits", "smoke", seeds=(0, 1)).grid_points():
            lam, k = point["responsibility_weight"], 100 if "K100" in point["variant"] else 10
            fd = 5.0 if point["variant"] == "standard" else 4.0 - lam / 100 - (2.0 if (k, lam) == (100, 10.0) else 0)
            rows.append(
                {
                    **point,
                    "protocol": protocol,
                    "state": "finished",
                    "autocast": "fp32",
                    "fd_classifier_gen": fd + 0.1 * point["seed"],
                    "precision": 0.5,
                }
            )
    return pd.DataFrame(rows)


def test_image_ablation_tables_select_lambda_by_fd_classifier_and_never_mix_protocols():
    runs = image_ablation_runs()
    factors = ["variant", "responsibility_weight"]
    kept, kept_factors, note = tables.select_best(runs, factors, "lambda")
    assert kept_factors == factors and "lowest seed-mean fd_classifier_gen" in note and "not an FID" in note
    chosen = kept.groupby("variant")["responsibility_weight"].unique()
    assert len(chosen) == 9 and chosen["standard"].tolist() == [0.0]
    assert chosen["mog-K100-LC-IP"].tolist() == [10.0] and chosen["mog-K10"].tolist() == [100.0]
    assert tables.table_metrics(["fd_classifier_gen", "precision", "recall"], "digits") == [
        "fd_classifier_gen",
        "precision",
        "recall",
    ]
    table = tables.ablation_table(
        kept, kept_factors, ["fd_classifier_gen", "precision"], baseline={"variant": "standard"}, decimals=3
    )
    assert len(table.stats) == 9 and table.best("precision") and "| precision ↑ |" in table.to_markdown()
    # narrowed grid: N(0,I) has no cell at λ > 0, the heatmap leaves those empty
    figures.heatmap(runs, "variant", "responsibility_weight", ["fd_classifier_gen"])

    mixed = image_ablation_runs(("clean", "paper"))
    with pytest.raises(ValueError, match="mix the evaluation protocols clean, paper"):
        tables.ablation_table(mixed, factors, ["fd_classifier_gen"])
    by_protocol = tables.ablation_table(mixed, ["protocol", *factors], ["fd_classifier_gen"])
    assert len(by_protocol.stats) == 2 * 33


def test_table_shows_each_rows_betas_and_its_protocol():
    """Each configuration may run at its own betas (--betas-from): a β column per row (no β_neg for a VAE, which never
    plays the game), none where a β is a factor; one protocol per table, named in the caption, or a factor."""
    rows = [
        {
            "variant": variant,
            "model": model,
            "beta_rec": rec,
            "beta_kl": kl_weight,
            "beta_neg": neg,
            "protocol": "paper",
            "seed": seed,
            "state": "finished",
            "kl": 1.0 + seed,
        }
        for variant, model, (rec, kl_weight, neg) in (
            ("vae-vamp", "vae", (0.8, 0.05, 0.9)),
            ("sintro-standard", "sintro", (0.2, 0.3, 0.6)),
        )
        for seed in range(2)
    ]
    runs = pd.DataFrame(rows)
    table = tables.ablation_table(runs, ["variant"], ["kl"])
    betas = table.cells()["β (rec, kl, neg)"]
    assert betas["vae-vamp"] == "0.8, 0.05, –" and betas["sintro-standard"] == "0.2, 0.3, 0.6"
    assert "Protocol: paper (reproduces the paper code's quirks)." in table.to_markdown()
    latex = table.to_latex()
    assert r"$\beta$ (rec, kl, neg)" in latex and "0.8, 0.05, --" in latex and "Protocol: paper" in latex
    assert "betas" in pd.read_csv(__import__("io").StringIO(table.to_csv()))
    assert "betas" not in tables.ablation_table(runs, ["variant", "beta_kl"], ["kl"]).stats
    both = tables.ablation_table(pd.concat([runs, runs.assign(protocol="clean")]), ["protocol", "variant"], ["kl"])
    assert both.protocol is None and "Protocol:" not in both.caption() and len(both.stats) == 4
