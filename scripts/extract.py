"""Snakemake adapter: compute the features of one shard of one feature set."""

from melstore.pipeline.jobs import snakemake_job

with snakemake_job(snakemake):
    from pathlib import Path

    from melstore.pipeline.extract import ShardJob, extract_shard
    from melstore.pipeline.runtime import retain_freed_memory

    retain_freed_memory()  # the workers it forks allocate and free a few MB per clip

    extract_shard(
        ShardJob(
            entries=snakemake.params.entries,
            root=snakemake.config["dataset"]["root"],
            out_path=Path(snakemake.output[0]),
            feature_set=snakemake.wildcards.featureset,
            build={
                "params": snakemake.params.features,
                "storage": snakemake.params.storage,
                "versions": snakemake.params.versions,
                "code": snakemake.params.code,
            },
            digest=snakemake.wildcards.digest,
            # from the config, not params: a shard's content does not depend on it,
            # and the gather enforces on_error over shards built before a change
            on_error=snakemake.config["on_error"],
            processes=snakemake.threads,
            # the index this run replaces: its shard files lend unchanged clips
            previous=snakemake.params.store if snakemake.config["reuse_clips"] else None,
        )
    )
