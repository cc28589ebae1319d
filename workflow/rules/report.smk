# Figures and tables of each store, shown by `snakemake --report report.html`.


rule report:
    input:
        store=store_path("{featureset}"),
    output:
        classes=report_file(
            "classes.png", caption="classes.rst", shows="one clip per class"
        ),
        power_vs_db=report_file(
            "power_vs_db.png", caption="power_vs_db.rst", shows="linear power vs dB"
        ),
        counts=report_file(
            "counts.png", caption="counts.rst", shows="clips per class and fold"
        ),
        counts_table=report_file(
            "counts.html",
            caption="counts_table.rst",
            shows="clips per class and fold, table",
        ),
        failures=report_file(
            "failures.html", caption="failures.rst", shows="files that failed"
        ),
        audit=report_file(
            "audit.html", caption="audit.rst", shows="leakage between folds"
        ),
    log:
        f"{LOGS}/report/{{featureset}}.log",
    localrule: True
    conda:
        "../../envs/melstore.yaml"
    # one process per figure
    threads: 3
    params:
        code=script_code("report.py"),
    script:
        "../../scripts/report.py"
