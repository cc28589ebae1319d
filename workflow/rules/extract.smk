rule extract:
    input:
        generated=plan.generated_files(),
    output:
        # gone once gathered: a rerun copies unchanged clips from the store instead
        temp(f"{RESULTS}/shards/{{featureset}}/{{shard}}.h5"),
    log:
        f"{LOGS}/extract/{{featureset}}/{{shard}}.log",
    benchmark:
        f"{LOGS}/benchmarks/extract/{{featureset}}/{{shard}}.tsv"
    conda:
        "../../envs/melstore.yaml"
    threads: EXTRACT_THREADS
    resources:
        mem_mb=lambda wildcards, threads: 100 + 100 * threads,
    params:
        entries=lambda wildcards: plan.shard_entries(wildcards.shard),
        sources=lambda wildcards: plan.shard_sources(wildcards.shard),
        gather_state=GATHER_STATE,
        store=lambda wildcards: store_path(wildcards.featureset),
        features=feature_params,
        storage=storage_params,
        versions=VERSIONS,
        code=script_code("extract.py"),
    script:
        "../../scripts/extract.py"
