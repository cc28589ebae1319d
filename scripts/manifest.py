"""Snakemake adapter: write the manifest columns the feature sets' index jobs read."""

from melstore.pipeline.jobs import snakemake_job

with snakemake_job(snakemake) as log:
    from melstore.errors import MelstoreError
    from melstore.pipeline.manifest_file import write_manifest_file
    from melstore.pipeline.plan import load_manifest

    # not a param: the manifest does not change when the dataset's root moves
    dataset = snakemake.config["dataset"]
    # paths only: the shard files hold their clips' sizes and mtimes
    manifest = load_manifest(dataset, with_stats=False)
    if manifest.listing_digest() != snakemake.params.listing:
        raise MelstoreError(
            f"the files under {dataset['root']} changed while the workflow ran; run it again"
        )
    write_manifest_file(manifest.store_columns(), snakemake.output[0])
    log.info("%s: %d clips", snakemake.output[0], len(manifest))
