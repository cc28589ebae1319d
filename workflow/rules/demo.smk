# Only the demo (dataset.root: resources/demo) has a rule that writes its root.
if plan.generated_files():

    rule demo_dataset:
        output:
            csv=plan.generated_files()[0],
            audio=plan.generated_files()[1:],
        log:
            f"{LOGS}/demo_dataset.log",
        localrule: True
        conda:
            "../../envs/melstore.yaml"
        params:
            root=lambda wildcards, output: os.path.dirname(os.path.dirname(output.csv)),
            # a change in the generator or a library rewrites the demo (no audio in params)
            versions=VERSIONS,
            code=script_code("demo_dataset.py"),
        script:
            "../../scripts/demo_dataset.py"
