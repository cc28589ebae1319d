rule gather:
    input:
        shards=shard_paths,
        metadata=plan.metadata_files(),
    output:
        store=f"{RESULTS}/{{featureset}}.h5",
        # what the store's clips were computed from: its next build reuses them by it
        record=f"{RESULTS}/{{featureset}}.sources.h5",
    log:
        f"{LOGS}/gather/{{featureset}}.log",
    benchmark:
        f"{LOGS}/benchmarks/gather/{{featureset}}.tsv"
    conda:
        "../../envs/melstore.yaml"
    params:
        features=feature_params,
        storage=storage_params,
        on_error=config["on_error"],
        min_success=config["min_success"],
        dataset=config["dataset"],
        versions=VERSIONS,
        code=script_code("gather.py"),
    script:
        "../../scripts/gather.py"
