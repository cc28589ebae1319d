"""Snakemake adapter: write the next index of one feature set over its shard files."""

from melstore.pipeline.jobs import snakemake_job

with snakemake_job(snakemake) as log:
    from melstore.pipeline.gather import GatherJob, gather_store
    from melstore.pipeline.manifest_file import read_manifest_file

    summary = gather_store(
        GatherJob(
            manifest=read_manifest_file(snakemake.input.manifest),
            shard_paths=snakemake.input.shards,
            store=snakemake.params.store,
            out_path=snakemake.output[0],
            dataset=snakemake.params.dataset,
            feature_set=snakemake.wildcards.featureset,
            params=snakemake.params.features,
            storage=snakemake.params.storage,
            on_error=snakemake.params.on_error,
            min_success=snakemake.params.min_success,
        )
    )
    log.info("%s", summary)
    print(summary)
