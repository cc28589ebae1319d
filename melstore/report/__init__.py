"""Figures and tables of a finished store, and the linear baseline of `snakemake evaluate`."""
