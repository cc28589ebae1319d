"""The report rule (part of the default target) and `snakemake --report`, end to end."""

import base64
import re
import shutil
import subprocess
import sys

import pytest
from conftest import REPO, assert_real_image, merged_config, run_snakemake

FEATURE_SETS = ("seed", "logspec", "seed64")
FIGURES = ("classes.png", "power_vs_db.png", "counts.png")
TABLES = ("counts.html", "failures.html", "audit.html")


@pytest.fixture(scope="module")
def html_report(demo_build):
    workdir, _ = demo_build
    command = [
        sys.executable, "-m", "snakemake",
        "--snakefile", str(REPO / "Snakefile"),
        "--directory", str(workdir),
        "--report", "report.html",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return (workdir / "report.html").read_text()


@pytest.mark.parametrize("featureset", FEATURE_SETS)
def test_the_default_target_draws_real_figures_for_every_feature_set(demo_build, featureset):
    folder = demo_build[0] / f"results/demo/report/{featureset}"
    assert sorted(p.name for p in folder.iterdir()) == sorted(FIGURES + TABLES)
    for name in FIGURES:
        assert_real_image(folder / name, min_colours=40 if name == "counts.png" else 500)


def test_the_tables_hold_the_counts_and_the_failures(demo_build, variable_build):
    counts = (demo_build[0] / "results/demo/report/seed/counts.html").read_text()
    assert "<table" in counts and ">chirps</th>" in counts and ">48</td>" in counts
    failures = (demo_build[0] / "results/demo/report/seed/failures.html").read_text()
    assert "Every file was read." in failures and "<table" not in failures
    workdir, _ = variable_build
    failures = (workdir / "results/ponds/report/var/failures.html").read_text()
    assert ">frog/broken.wav</td>" in failures and "not decodable audio" in failures
    assert "fold (fallback)" in (workdir / "results/ponds/report/var/counts.html").read_text()
    for name in FIGURES:
        assert_real_image(
            workdir / f"results/ponds/report/var/{name}",
            min_colours=10 if name == "counts.png" else 300,
        )


def test_the_html_report_is_self_contained_and_embeds_every_figure_and_table(
    demo_build, html_report
):
    workdir, _ = demo_build
    for featureset in FEATURE_SETS:
        for name in FIGURES + TABLES:
            content = (workdir / f"results/demo/report/{featureset}/{name}").read_bytes()
            assert base64.b64encode(content).decode() in html_report, f"{featureset}/{name}"
    assert "why CNNs are trained on the dB version" in html_report  # the seed question's caption
    assert not re.search(r"<(script|img|link)[^>]+(src|href)=[\"']https?:", html_report)


def test_extraction_logs_progress_and_the_gather_prints_one_line_per_store(
    demo_build, variable_build
):
    workdir, result = demo_build
    [log] = [path.read_text() for path in (workdir / "logs/demo/extract/seed").glob("s-*.log")]
    assert re.search(
        r"INFO seed/s-[0-9a-f]+: 48/48 files computed \(\d+\.\d files/s\), 0 failed, 0 reused",
        log,
    )
    for featureset, shape in [("seed", "(48, 128, 130)"), ("logspec", "(48, 161, 299)")]:
        store = f"results/demo/{featureset}.h5"
        summaries = [line for line in result.stdout.splitlines() if line.startswith(store)]
        assert summaries == [f"{store}: 48 clips, features {shape} float32"]
    log = (variable_build[0] / "logs/ponds/gather/var.log").read_text()
    assert log.rstrip().endswith(
        "results/ponds/var.h5: 6 clips, features (32, 259) float32; "
        "1 of 7 files failed; see failures table in results/ponds/var.h5"
    )


def test_the_report_is_drawn_again_from_the_store_when_the_store_changes(demo_build, tmp_path):
    workdir, _ = demo_build
    config = merged_config(workdir)
    copy = tmp_path / "work"
    shutil.copytree(workdir, copy, symlinks=True)
    figures = copy / "results/demo/report/seed"
    before = {p.name: p.stat().st_mtime_ns for p in figures.iterdir()}
    result = run_snakemake(copy, config, "--forcerun", "gather")
    assert {p.name for p in figures.iterdir() if p.stat().st_mtime_ns != before[p.name]} == set(
        before
    )
    assert "rule report" in result.stdout + result.stderr
