rule demo_dataset:
    output:
        plan.generated_files(),
    params:
        root=str(plan.root),
    log:
        f"{LOGS}/demo_dataset.log",
    localrule: True
    script:
        "../../scripts/demo_dataset.py"
