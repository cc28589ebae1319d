"""Snakemake adapter: draw the report figures and tables of one store, from its shards."""

from melstore.jobs import snakemake_job

with snakemake_job(snakemake) as log:
    from functools import partial

    from melstore.reader import ShardedStore
    from melstore.report import write_report
    from melstore.workflow import load_manifest

    # the shards hold what the gather is writing: drawing runs beside it, not after
    store = partial(
        ShardedStore,
        manifest=load_manifest(snakemake.params.dataset).store_columns(),
        shard_paths=snakemake.input.shards,
        dataset=snakemake.params.dataset,
        feature_set=snakemake.wildcards.featureset,
        params=snakemake.params.features,
    )
    # The rule declares one core, so that Snakemake runs it beside the gather, yet
    # draws each figure in its own forked process: for the second or so they
    # overlap the gather, the cores are oversubscribed, and the report ends
    # ~1 s sooner (the class grid alone takes a second to draw).
    write_report(store, **dict(snakemake.output.items()), processes=3)
    log.info("report of %s written to %s", snakemake.wildcards.featureset, snakemake.output.classes)
