"""The report rule (part of the default target) and `snakemake --report`, end to end."""

import base64
import re
import shutil
import subprocess
import sys
import time

import h5py
import pytest
from conftest import REPO, assert_real_image

import melstore
from melstore.report import (
    class_examples,
    digest_in,
    seed_question_row,
    shown_digest,
    write_report,
)

FEATURE_SETS = ("seed", "logspec", "seed64")
FIGURES = ("classes.png", "power_vs_db.png", "counts.png")
TABLES = ("counts.html", "failures.html")


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
    log = (workdir / "logs/demo/extract/seed/s.log").read_text()
    assert re.search(
        r"INFO seed/s: 48/48 files computed \(\d+\.\d files/s\), 0 failed, 0 reused", log
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


def test_a_file_is_remade_only_when_what_it_shows_changes(demo_build, tmp_path, monkeypatch):
    monkeypatch.chdir(demo_build[0])  # the demo's dataset root is relative, as in the job
    store = tmp_path / "seed.h5"
    shutil.copy("results/demo/seed.h5", store)
    outputs = {
        **{name: tmp_path / f"{name}.png" for name in ("classes", "power_vs_db", "counts")},
        "counts_table": tmp_path / "counts.html",
        "failures": tmp_path / "failures.html",
    }

    def remade_by_write_report():
        before = {name: path.stat().st_mtime_ns for name, path in outputs.items()}
        time.sleep(0.01)
        write_report(store, **outputs, processes=2)
        return {name for name, path in outputs.items() if path.stat().st_mtime_ns != before[name]}

    write_report(store, **outputs, processes=2)
    for path in outputs.values():
        assert digest_in(path) is not None
    with melstore.open(store) as opened:
        example = int(class_examples(opened).index[0])
        assert example != seed_question_row(opened)
        shown = {example, seed_question_row(opened), *class_examples(opened).index}
        other = next(row for row in range(len(opened)) if row not in shown)
    with h5py.File(store, "r+") as f:  # one example of the class grid, and nothing else
        f["features"][example] = f["features"][example] - 1.0
    outputs["counts"].write_bytes(b"not a png")  # a file without a digest is made again
    assert remade_by_write_report() == {"classes", "counts"}
    assert_real_image(outputs["counts"], min_colours=40)
    with melstore.open(store) as opened:  # the redrawn grid carries the new digest
        assert digest_in(outputs["classes"]) == shown_digest("classes", opened)
    with h5py.File(store, "r+") as f:  # a clip no figure draws moves to another fold
        f["metadata/fold"][other] = f["metadata/fold"][other] % 5 + 1
    assert remade_by_write_report() == {"counts", "counts_table"}
    assert remade_by_write_report() == set()


def test_a_report_with_nothing_to_remake_imports_neither_pandas_nor_matplotlib(
    demo_build, tmp_path
):
    outputs = {name: str(tmp_path / f"{name}{suffix}") for name, suffix in
               [("classes", ".png"), ("power_vs_db", ".png"), ("counts", ".png"),
                ("counts_table", ".html"), ("failures", ".html")]}  # fmt: skip
    check = (
        "import sys; from melstore.report import write_report; "
        f"write_report('results/demo/seed.h5', **{outputs!r}, processes=2); "
        "print(sorted({'pandas', 'matplotlib'} & set(sys.modules)))"
    )
    runs = [
        subprocess.run(
            [sys.executable, "-c", check], cwd=demo_build[0], capture_output=True, text=True
        ).stdout
        for _ in range(2)
    ]
    assert runs == ["['matplotlib', 'pandas']\n", "[]\n"]
