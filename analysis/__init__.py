"""From a study's MLflow runs to the paper's ablation tables and figures: loading (runs and histories as pandas
frames, parquet), tables (mean ± std over seeds, baseline comparison), figures (seaborn), report (the CLI)."""
