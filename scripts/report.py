"""Snakemake adapter: draw the report figures and tables of one finished store."""

from melstore.pipeline.jobs import snakemake_job

with snakemake_job(snakemake) as log:
    from melstore.report.tables import write_report

    write_report(
        snakemake.input.store, **dict(snakemake.output.items()), processes=snakemake.threads
    )
    log.info("report of %s written to %s", snakemake.input.store, snakemake.output.classes)
