rule extract:
    input:
        generated=plan.generated_files(),
    output:
        # kept: its name changes with what decides it, and the index reads it
        f"{RESULTS}/shards/{{featureset}}/{{shard}}-{{digest}}.h5",
    log:
        f"{LOGS}/extract/{{featureset}}/{{shard}}-{{digest}}.log",
    benchmark:
        f"{LOGS}/benchmarks/extract/{{featureset}}/{{shard}}-{{digest}}.tsv"
    conda:
        "../../envs/melstore.yaml"
    threads: EXTRACT_THREADS
    resources:
        # a variable-length set's job asks for its longest file's features
        mem_mb=lambda wildcards, threads: plan.extract_mem_mb(
            wildcards.featureset, wildcards.shard, threads=threads
        ),
    params:
        entries=lambda wildcards: plan.shard_entries(wildcards.shard),
        store=lambda wildcards: store_path(wildcards.featureset),
        features=feature_params,
        storage=storage_params,
        versions=VERSIONS,
        code=EXTRACT_CODE,
    script:
        "../../scripts/extract.py"
