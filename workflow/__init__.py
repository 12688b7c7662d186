"""LS-AI track pipelines: the importable library behind the Snakemake rules."""
