from snakemake.utils import min_version

min_version("9.0")


# the embedded default, beside this file; --configfile and --config merge over it
configfile: os.path.join(workflow.basedir, "config.yaml")


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/demo.smk"
include: "workflow/rules/extract.smk"
include: "workflow/rules/store.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        stores=expand(store_path("{featureset}"), featureset=plan.feature_sets),
        reports=expand(rules.report.output, featureset=plan.feature_sets),
