"""Snakemake adapter: compute the features of one shard of one feature set."""

from melstore.pipeline.jobs import snakemake_job

with snakemake_job(snakemake):
    from melstore.pipeline.extract import extract_shard

    extract_shard(
        entries=snakemake.params.entries,
        root=snakemake.config["dataset"]["root"],
        params=snakemake.params.features,
        out_path=snakemake.output[0],
        feature_set=snakemake.wildcards.featureset,
        storage=snakemake.params.storage,
        # from the config, not params: a shard's content does not depend on it,
        # and the gather enforces on_error over shards built before a change
        on_error=snakemake.config["on_error"],
        processes=snakemake.threads,
        code=snakemake.params.code,
        # the store this run replaces; read before the gather removes it
        previous=snakemake.params.store if snakemake.config["reuse_clips"] else None,
        state=snakemake.params.gather_state,
    )
