# The linear baseline that checks each store's features, labels and folds.
# Not part of `all`: it needs the optional extra (pip install -e '.[evaluate]').
from melstore.report.baseline import extra_versions


rule evaluate:
    input:
        tables=expand(
            f"{RESULTS}/{{featureset}}.baseline.csv", featureset=plan.feature_sets
        ),
        figures=expand(
            f"{RESULTS}/{{featureset}}.confusion.png", featureset=plan.feature_sets
        ),


rule baseline:
    input:
        store_path("{featureset}"),
    output:
        table=f"{RESULTS}/{{featureset}}.baseline.csv",
        figure=report(
            f"{RESULTS}/{{featureset}}.confusion.png",
            caption="../report/baseline.rst",
            category="Baseline",
            subcategory="{featureset}",
            labels={"feature set": "{featureset}", "figure": "confusion matrix"},
        ),
    log:
        f"{LOGS}/baseline/{{featureset}}.log",
    conda:
        "../../envs/evaluate.yaml"
    threads: 1
    params:
        versions={**VERSIONS, **extra_versions()},
        code=script_code("evaluate.py"),
    script:
        "../../scripts/evaluate.py"
