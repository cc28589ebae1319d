# The dataset's clips and CSV columns, written again only when its files or CSV change.
rule manifest:
    input:
        metadata=plan.metadata_files(),
    output:
        f"{RESULTS}/manifest.h5",
    log:
        f"{LOGS}/manifest.log",
    benchmark:
        f"{LOGS}/benchmarks/manifest.tsv"
    conda:
        "../../envs/melstore.yaml"
    params:
        # the listed paths, not the files' contents: a rewritten file reruns only its shard
        listing=plan.manifest.listing_digest(),
        layout=config["dataset"]["layout"],
        versions=VERSIONS,
        code=script_code("manifest.py"),
    script:
        "../../scripts/manifest.py"


rule gather:
    input:
        shards=shard_paths,
        manifest=rules.manifest.output[0],
    output:
        # beside the store, which stays readable until `publish` links this in its place
        index=f"{RESULTS}/.{{featureset}}.index.h5",
    log:
        f"{LOGS}/gather/{{featureset}}.log",
    benchmark:
        f"{LOGS}/benchmarks/gather/{{featureset}}.tsv"
    conda:
        "../../envs/melstore.yaml"
    params:
        **GATHER_PARAMS,
        # holds the previous index until then: its shard files are kept one more build
        store=lambda wildcards: store_path(wildcards.featureset),
    script:
        "../../scripts/gather.py"


# Snakemake records the params and inputs of a gather that failed as if it had succeeded,
# and then finds nothing to do: the store is published with them, so its record is true.
rule publish:
    input:
        index=rules.gather.output.index,
        shards=shard_paths,
        manifest=rules.manifest.output[0],
    output:
        store_path("{featureset}"),
    log:
        f"{LOGS}/publish/{{featureset}}.log",
    localrule: True
    conda:
        "../../envs/melstore.yaml"
    params:
        **GATHER_PARAMS,
    # a second name of the same file: no copy, and readers of the old one keep it
    shell:
        "ln {input.index:q} {output:q} 2> {log:q}"
