"""docs/incremental.md's rerun table, executed: each row's change, and the jobs Snakemake plans.

Every row of the table "What reruns when" is made on a small build and
``snakemake -n all evaluate`` is asked which jobs it would run; they must be the
row's. A row without a change here, or a change here without a row, fails.
Code changes are made in a copy of the workflow and package, so that the
checkout is never edited.
"""

import os
import re
import shutil
import subprocess
import sys
import sysconfig
from collections import defaultdict
from contextlib import contextmanager
from modulefinder import ModuleFinder
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import (
    REPO,
    USER_CONFIG,
    keep_a_copy,
    restore,
    run_snakemake,
    snakemake_command,
    tone,
    write_audio,
)

import melstore
from melstore.errors import MelstoreError
from melstore.pipeline.fingerprint import imported_modules

DOCS = REPO / "docs/incremental.md"
TARGETS = ("all", "evaluate")
# Each rule's script, and the rules that consume its outputs.
SCRIPTS = {
    "demo_dataset": "demo_dataset.py",
    "extract": "extract.py",
    "manifest": "manifest.py",
    "gather": "gather.py",
    "report": "report.py",
    "baseline": "evaluate.py",
}
DOWNSTREAM = {
    "demo_dataset": {"extract", "manifest"},
    "extract": {"gather"},
    "manifest": {"gather"},
    "gather": {"publish"},
    "publish": {"report", "baseline"},
    "report": set(),
    "baseline": set(),
}
SETS = {
    "a": {"preset": "seed", "n_mels": 32, "duration": 0.5},
    "b": {"preset": "seed", "n_mels": 16, "duration": 0.5},
}
FILES = [f"class{i % 3}/clip{i:02d}.wav" for i in range(12)]
# Rules with one job for the dataset, not one per feature set.
DATASET_RULES = ("manifest",)


def rerun_table() -> dict[str, str]:
    """The table's rows: change -> its "jobs that rerun" cell."""
    section = DOCS.read_text().split("## What reruns when", 1)[1]
    table = section[section.index("\n|") + 1 :].split("\n\n", 1)[0]  # the section's first table
    header, _, *body = [[cell.strip() for cell in row.strip("|").split(" | ")]
                        for row in table.splitlines()]  # fmt: skip
    assert header[:2] == ["change", "jobs that rerun"]
    return {row[0]: row[1] for row in body}


def expected_jobs(cell: str, feature_sets) -> set[tuple[str, str, str]]:
    """The (rule, feature set, shards) of the jobs a "jobs that rerun" cell names.

    ``extract`` runs for "every shard" of a set, or for "its shard" (the
    changed file's) when the cell says "`extract` of its shard".
    """
    if cell == "none":
        return set()
    sets = [feature_sets[-1]] if cell.endswith("of that set") else feature_sets
    jobs = set()
    for rule, of_its_shard in re.findall(r"`(\w+)`( of its shard)?", cell):
        shards = ("its shard" if of_its_shard else "every shard") if rule == "extract" else ""
        jobs |= {(rule, "" if rule in DATASET_RULES else name, shards) for name in sets}
    return jobs


def planned_jobs(output: str) -> set[tuple[str, str, str]]:
    """The (rule, feature set, shards) of every job a dry run lists, the target rules aside.

    Shards are said of ``extract`` only, against the shard files its set's
    gather reads: "every shard", "its shard" (one of several), or "n of m shards".
    """
    jobs, extracted, gathered = set(), defaultdict(set), {}
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", output):
        rule = re.match(r"(?:local)?rule (\w+):", block)
        if not rule or rule.group(1) in TARGETS:
            continue
        wildcards = re.search(r"wildcards: .*featureset=([\w-]+)", block)
        name = wildcards.group(1) if wildcards else ""
        if rule.group(1) == "extract":
            extracted[name].add(re.search(r"output: (\S+)", block).group(1))
            continue
        jobs.add((rule.group(1), name, ""))
        if rule.group(1) == "gather":
            inputs = re.search(r"input: (.*)", block).group(1).split(", ")
            gathered[name] = {path for path in inputs if "/shards/" in path}
    for name, shards in extracted.items():
        every = gathered[name]
        assert shards <= every  # a shard job runs only for its set's gather
        n = len(shards)
        scope = "its shard" if n == 1 else f"{n} of {len(every)} shards"
        jobs.add(("extract", name, "every shard" if shards == every else scope))
    return jobs


def dry_run(workdir: Path, config: dict, *args, env=None, snakefile=REPO / "Snakefile") -> set:
    (workdir / USER_CONFIG).write_text(yaml.safe_dump(config))
    command = snakemake_command(workdir, "-n", *TARGETS, *args, snakefile=snakefile)
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=300, env={**os.environ, **(env or {})}
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return planned_jobs(result.stdout + result.stderr)


def make_dataset(root: Path) -> Path:
    for i, path in enumerate(FILES):
        write_audio(root / path, tone(16000, 0.3, 1, 200 + 40 * i, i), 16000)
    csv = root.parent / "meta.csv"
    labels = [path.split("/")[0] for path in FILES]
    pd.DataFrame({"path": FILES, "label": labels, "fold": [i % 3 + 1 for i in range(12)]}).to_csv(
        csv, index=False
    )
    return csv


def config(base: Path, **changes) -> dict:
    dataset = {"name": "rr", "layout": "folder", "root": str(base / "data"),
               "metadata": str(base / "meta.csv")}  # fmt: skip
    return {"dataset": dataset, "features": list(SETS), "feature_sets": SETS, "shard_size": 5,
            **changes}  # fmt: skip


@pytest.fixture(scope="module")
def kept_build(tmp_path_factory):
    """A folder dataset with a CSV, built through `snakemake all evaluate`, and a kept copy."""
    base = tmp_path_factory.mktemp("reruns")
    make_dataset(base / "data")
    run_snakemake(base / "work", config(base), *TARGETS)
    return base, keep_a_copy(base, tmp_path_factory)


@pytest.fixture
def build(kept_build):
    """The build as after its clean run, at the same absolute paths."""
    restore(*kept_build)
    return kept_build[0]


def touch_later(path: Path) -> None:
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))


@contextmanager
def upgraded(tmp_path: Path, package: str):
    """Environment in which ``package`` reports a newer version (a sitecustomize hook)."""
    hook = tmp_path / "upgrade"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import importlib.metadata as m\n"
        "_version = m.version\n"
        f"m.version = lambda name: '999.0' if name == {package!r} else _version(name)\n"
    )
    yield {"PYTHONPATH": os.pathsep.join(filter(None, [str(hook), os.environ.get("PYTHONPATH")]))}


def change_nothing(base, tmp_path):
    return dry_run(base / "work", config(base)), list(SETS)


def change_a_parameter(base, tmp_path):
    """n_mels, and separately precision_db and compression, of set b."""
    plans = []
    for change in ({"n_mels": 20}, {"precision_db": 0.05}, {"compression": "gzip"}):
        sets = {**SETS, "b": {**SETS["b"], **change}}
        plans.append(dry_run(base / "work", config(base, feature_sets=sets)))
    assert plans[0] == plans[1] == plans[2]
    return plans[0], list(SETS)


def add_a_feature_set(base, tmp_path):
    sets = {**SETS, "c": {"preset": "seed", "n_mels": 8, "duration": 0.5}}
    return dry_run(base / "work", config(base, feature_sets=sets, features=[*sets])), [*sets]


def change_on_error_or_min_success(base, tmp_path):
    on_error = dry_run(base / "work", config(base, on_error="fail"))
    assert dry_run(base / "work", config(base, min_success=0.5)) == on_error
    return on_error, list(SETS)


def change_shard_size(base, tmp_path):
    return dry_run(base / "work", config(base, shard_size=3)), list(SETS)


def add_a_file(base, tmp_path):
    write_audio(base / "data/class0/new.wav", tone(16000, 0.3), 16000)
    return dry_run(base / "work", config(base)), list(SETS)


def remove_a_file(base, tmp_path):
    (base / "data" / FILES[4]).unlink()
    return dry_run(base / "work", config(base)), list(SETS)


def replace_or_touch_a_file(base, tmp_path):
    touched_file = base / "data" / FILES[5]
    before = touched_file.stat()
    touch_later(touched_file)
    touched = dry_run(base / "work", config(base))
    os.utime(touched_file, ns=(before.st_atime_ns, before.st_mtime_ns))  # one change at a time
    write_audio(base / "data" / FILES[6], tone(16000, 0.3, 1, 999), 16000)
    assert dry_run(base / "work", config(base)) == touched
    return touched, list(SETS)


def change_csv_values(base, tmp_path):
    csv = pd.read_csv(base / "meta.csv")
    csv.loc[0, "label"] = "relabelled"
    csv.to_csv(base / "meta.csv", index=False)
    return dry_run(base / "work", config(base)), list(SETS)


def move_the_root(base, tmp_path):
    shutil.copytree(base / "data", base / "moved", symlinks=True)  # keeps size and mtime
    moved = config(base)
    moved["dataset"]["root"] = str(base / "moved")
    return dry_run(base / "work", moved), list(SETS)


def delete_a_shard_file(base, tmp_path):
    """A shard file deleted: melstore refuses its store; ``--forcerun gather`` rebuilds the file."""
    shard = next((base / "work/results/rr/shards/a").iterdir())
    shard.unlink()
    with pytest.raises(MelstoreError, match=f"{shard}: shard file missing"):
        melstore.open(base / "work/results/rr/a.h5")
    forced = dry_run(base / "work", config(base), "--forcerun", "gather")
    gathers = expected_jobs("`gather` `publish` `report` `baseline`", list(SETS))
    assert forced == gathers | {("extract", "a", "its shard")}
    return dry_run(base / "work", config(base)), list(SETS)


def edit_workflow_rules_and_docs(base, tmp_path):
    workflow = workflow_copy(tmp_path)
    for edited in ("Snakefile", "workflow/rules/extract.smk", "workflow/report/counts.rst"):
        path = workflow / edited
        path.write_text(path.read_text() + "\n# a refactor that changes nothing\n")
    (workflow / "docs").mkdir()
    (workflow / "docs/new.md").write_text("# notes\n")
    return dry_run_copy(base, workflow), list(SETS)


def upgrade_a_library(base, tmp_path):
    with upgraded(tmp_path, "soxr") as env:
        return dry_run(base / "work", config(base), env=env), list(SETS)


def upgrade_scikit_learn(base, tmp_path):
    with upgraded(tmp_path, "scikit-learn") as env:
        return dry_run(base / "work", config(base), env=env), list(SETS)


# Each row of the table, by its change cell; code rows are checked module by module below.
CHANGES = {
    "nothing": change_nothing,
    "a parameter of one feature set, its `precision_db` or `compression`": change_a_parameter,
    "a feature set added to `features`": add_a_feature_set,
    "`on_error` or `min_success`": change_on_error_or_min_success,
    "`shard_size`": change_shard_size,
    "a file added (folder; or file and CSV row)": add_a_file,
    "a file removed": remove_a_file,
    "a file's content replaced, or its mtime touched": replace_or_touch_a_file,
    "labels, folds or other values of the metadata CSV": change_csv_values,
    "a shard file deleted": delete_a_shard_file,
    "the dataset moved to a new `root`, its files keeping size and mtime (`cp -a`, `rsync -a`)": (
        move_the_root
    ),
    "`Snakefile`, `workflow/rules/*.smk`, report captions (`workflow/report/*.rst`), docs": (
        edit_workflow_rules_and_docs
    ),
    "a library upgrade (librosa, numpy, scipy, soundfile, libsndfile, soxr, h5py, HDF5, pandas, "
    "melstore)": upgrade_a_library,
    "scikit-learn or matplotlib upgraded": upgrade_scikit_learn,
}
CODE_ROWS = ("melstore package code", "a `scripts/*.py` adapter")


def test_every_row_of_the_table_is_executed_here():
    assert set(rerun_table()) == set(CHANGES) | set(CODE_ROWS)


@pytest.mark.parametrize("change", CHANGES)
def test_each_rows_change_plans_the_rows_jobs(change, build, tmp_path):
    planned, feature_sets = CHANGES[change](build, tmp_path)
    assert planned == expected_jobs(rerun_table()[change], feature_sets)


# --- code: every module of the package and every script, in a copy of the workflow


def workflow_copy(tmp_path: Path) -> Path:
    """The workflow and its package, copied: what `git ls-files` would give a clone."""
    copy = tmp_path / "workflow-copy"
    copy.mkdir()
    for part in ("Snakefile", "config.yaml", "workflow", "scripts", "profiles", "envs", "melstore"):
        source = REPO / part
        if source.is_dir():
            shutil.copytree(source, copy / part, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, copy / part)
    return copy


def dry_run_copy(base: Path, workflow: Path, config_=None) -> set:
    """A dry run of the copy's Snakefile, importing the copy's package.

    ``python -S`` with site-packages on PYTHONPATH: the editable install's
    import hook (a .pth file, read by the site module) would find the checkout's.
    It runs in the copy: ``-m`` puts the working directory first on the path.
    """
    packages = sysconfig.get_paths()["purelib"]
    env = {"PYTHONPATH": os.pathsep.join([str(workflow), packages])}
    command = [sys.executable, "-S", *snakemake_command(base / "work", "-n", *TARGETS,
               snakefile=workflow / "Snakefile")[1:]]  # fmt: skip
    (base / "work" / USER_CONFIG).write_text(yaml.safe_dump(config_ or config(base)))
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **env},
        cwd=workflow,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return planned_jobs(result.stdout + result.stderr)


def modules_of(script: str) -> set[str]:
    """The package modules a script imports, directly or not, as the standard library finds them."""
    finder = ModuleFinder(path=[str(REPO)])
    finder.run_script(str(REPO / "scripts" / script))
    return {name for name in finder.modules if name.split(".")[0] == "melstore"}


def after(rules: set[str]) -> set[str]:
    """``rules`` and every rule downstream of them (a gather alone reads the kept shard files)."""
    found, pending = set(), list(rules)
    while pending:
        rule = pending.pop()
        if rule not in found:
            found.add(rule)
            pending.extend(DOWNSTREAM[rule])
    return found


def package_modules() -> list[str]:
    return sorted(
        ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
        for path in (REPO / "melstore").rglob("*.py")
    )


def test_each_rules_modules_are_found_from_the_imports_and_listed_in_the_docs():
    listed = {}
    for line in DOCS.read_text().splitlines():
        row = re.match(r"\| `(\w+)` \| `scripts/([\w.]+)` \| (.*) \|$", line)
        if row:
            listed[row.group(1)] = (
                row.group(2),
                {f"melstore.{m}" for m in row.group(3).split(", ")},
            )
    assert set(listed) == set(SCRIPTS)
    for rule, script in SCRIPTS.items():
        found = modules_of(script)
        assert set(imported_modules(REPO / "scripts" / script)) == found
        assert listed[rule] == (script, found - {"melstore"})


@pytest.fixture(scope="module")
def demo_kept(tmp_path_factory):
    """The demo built with one set: every rule runs, the generator's too. Only dry runs follow."""
    base = tmp_path_factory.mktemp("reruns-demo")
    run_snakemake(base / "work", {"features": ["seed"]}, *TARGETS)
    return base


def test_each_module_edit_reruns_exactly_the_rules_that_import_it(demo_kept, tmp_path):
    workflow = workflow_copy(tmp_path)
    demo_config = {"features": ["seed"]}
    assert dry_run_copy(demo_kept, workflow, demo_config) == set()
    importers = {rule: modules_of(script) for rule, script in SCRIPTS.items()}
    wrong = {}
    for module in package_modules():
        path = workflow / Path(*module.split("."))
        path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
        original = path.read_text()
        path.write_text(original + "\nEDITED_BY_A_TEST = 1\n")
        direct = {rule for rule, modules in importers.items() if module in modules}
        planned = {rule for rule, *_ in dry_run_copy(demo_kept, workflow, demo_config)}
        if planned != after(direct):
            wrong[module] = (sorted(planned), sorted(after(direct)))
        path.write_text(original)
    assert not wrong


@pytest.mark.parametrize("rule", SCRIPTS)
def test_each_script_edit_reruns_its_rule_and_the_jobs_after_it(rule, demo_kept, tmp_path):
    workflow = workflow_copy(tmp_path)
    script = workflow / "scripts" / SCRIPTS[rule]
    script.write_text(script.read_text() + "\nEDITED_BY_A_TEST = 1\n")
    planned = {job for job, *_ in dry_run_copy(demo_kept, workflow, {"features": ["seed"]})}
    assert planned == after({rule})
