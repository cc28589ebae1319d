rule gather:
    input:
        shards=shard_paths,
        metadata=plan.metadata_files(),
    output:
        # kept in place while the job runs (a small backup, no features): extraction
        # jobs read the shards it lists, and a failed job leaves the old store readable
        store=update(f"{RESULTS}/{{featureset}}.h5"),
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
