"""Snakemake adapter: cross-validate the linear baseline on one store."""

from melstore.pipeline.jobs import snakemake_job

with snakemake_job(snakemake) as log:
    from melstore.report.baseline import evaluate_store, write_results

    result = evaluate_store(snakemake.input[0])
    write_results(
        result,
        table_path=snakemake.output.table,
        figure_path=snakemake.output.figure,
        title=f"{snakemake.config['dataset']['name']} / {snakemake.wildcards.featureset}",
    )
    summary = (
        f"{snakemake.output.table}: mean fold accuracy {result.mean_accuracy:.3f} "
        f"over {len(result.folds)} folds"
    )
    if result.n_unlabelled:
        summary += f" ({result.n_unlabelled} unlabelled clip(s) left out)"
    log.info("%s", summary)
    print(summary)
