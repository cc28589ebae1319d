"""Snakemake adapter: write the demo dataset."""

from melstore.pipeline.jobs import snakemake_job

with snakemake_job(snakemake) as log:
    from melstore.pipeline import demo

    demo.write(snakemake.params.root)
    log.info("demo dataset written to %s", snakemake.params.root)
