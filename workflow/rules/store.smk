rule gather:
    input:
        shards=shard_paths,
        frontend=rules.frontend.output[0],
        metadata=plan.metadata_files(),
    output:
        f"{RESULTS}/{{featureset}}.h5",
    log:
        f"{LOGS}/gather/{{featureset}}.log",
    benchmark:
        f"benchmarks/{plan.dataset}/gather/{{featureset}}.tsv"
    localrule: True
    conda:
        "../../envs/melstore.yaml"
    params:
        features=feature_params,
        manifest_digest=plan.manifest.digest(),
        on_error=config["on_error"],
        min_success=config["min_success"],
        dataset=config["dataset"],
        versions=VERSIONS,
        code=code_fingerprint(GATHER_MODULES),
    script:
        "../../scripts/gather.py"
