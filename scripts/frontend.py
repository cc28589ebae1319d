"""Snakemake adapter: build a feature set's window and mel filter bank (with librosa)."""

from melstore.jobs import snakemake_job

with snakemake_job(snakemake):
    from melstore.features import FeatureParams, Frontend

    Frontend.build(FeatureParams.from_dict(snakemake.params.features)).save(snakemake.output[0])
