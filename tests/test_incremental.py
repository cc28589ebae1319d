"""Incremental rebuilds: exactly what a change affects reruns, and nothing else."""

import hashlib
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import soundfile as sf
import xxhash
from conftest import REPO, keep_a_copy, restore, run_snakemake, tone, write_audio

from melstore.pipeline.fingerprint import script_fingerprint
from melstore.pipeline.plan import Plan
from melstore.store.format import read_shard_refs, read_table

N_FILES = 30
README = (REPO / "README.md").read_text()


def make_dataset(root):
    for i in range(N_FILES):
        write_audio(
            root / f"class{i % 3}/clip{i:02d}.wav",
            tone(16000, 0.3, 1 + i % 2, 200 + 20 * i, i),
            16000,
        )


def config(root, n_mels_b=16, shard_size=10):
    return {
        "dataset": {"name": "inc", "layout": "folder", "root": str(root)},
        "features": ["a", "b"],
        "feature_sets": {
            "a": {"preset": "seed", "n_mels": 32, "duration": 0.5},
            "b": {"preset": "seed", "n_mels": n_mels_b, "duration": 0.5},
        },
        "shard_size": shard_size,  # a few shards per set: a change reruns one of them
    }


def outputs(workdir):
    """Every store and extraction job's log, with its modification time."""
    return {
        p.relative_to(workdir).as_posix(): p.stat().st_mtime_ns
        for pattern in ("results/inc/*.h5", "logs/inc/extract/*/*.log")
        for p in workdir.glob(pattern)
    }


def rewritten(before, after, prefix):
    return {p for p, t in after.items() if p.startswith(prefix) and before.get(p) != t}


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def listed(workdir, name):
    """The shard files the store of feature set ``name`` lists, relative to its folder."""
    with h5py.File(workdir / f"results/inc/{name}.h5", "r") as index:
        return {ref.name for ref in read_shard_refs(index)}


def on_disk(workdir, name):
    """The files in the shard folder of feature set ``name``, relative to the store's folder."""
    folder = workdir / "results/inc"
    return {p.relative_to(folder).as_posix() for p in (folder / "shards" / name).iterdir()}


def assert_stores_equal_a_clean_build(workdir, root, **changes):
    """Each feature set's store and the shard files it lists have a clean build's bytes."""
    clean = workdir.parent / "clean"
    run_snakemake(clean, config(root, **changes))
    for name in ("a", "b"):
        assert listed(workdir, name) == listed(clean, name)
        for path in [f"{name}.h5", *listed(clean, name)]:
            assert sha256(workdir / "results/inc" / path) == sha256(clean / "results/inc" / path)


def xxh128(path):
    return xxhash.xxh3_128(path.read_bytes()).hexdigest()


def computed_and_reused(workdir, logs):
    """Clips computed and clips copied unchanged, summed over the extraction jobs of these logs."""
    computed = reused = 0
    for log in logs:
        line = (workdir / log).read_text().splitlines()[-1]
        match = re.search(r"(\d+)/\d+ files computed .* (\d+) reused unchanged", line)
        computed, reused = computed + int(match[1]), reused + int(match[2])
    return computed, reused


def clips_of(workdir, logs):
    """The clips in the shard files the extraction jobs of these logs wrote."""
    shards = [log.replace("logs/inc/extract/", "results/inc/shards/") for log in logs]
    return sum(len(read_table((workdir / path).with_suffix(".h5"))) for path in shards)


def shard_files(root):
    """Each shard's file name in set a (stand-in code and versions), and each file's shard."""
    plan = Plan.from_config(config(root), schema_path=REPO / "workflow/schemas/config.schema.yaml")
    shard_of = {path: name for name in plan.shards for _, path, _ in plan.shard_entries(name)}
    return {name: plan.shard_file("a", name, "code", {}) for name in plan.shards}, shard_of


@pytest.mark.parametrize("change", ["rewrite", "touch", "older", "add", "remove", "break"])
def test_the_listing_sees_every_changed_added_and_removed_file(tmp_path, change):
    """The sizes and mtimes come with the listing: a change renames its shard's file, only it."""
    root = tmp_path / "data"
    make_dataset(root)
    before, shard_of = shard_files(root)
    assert shard_files(root)[0] == before  # nothing changed, nothing reruns
    target = root / "class1/clip04.wav"
    mtime = target.stat().st_mtime_ns
    if change == "rewrite":  # same length and mtime-second: only the bytes and mtime_ns differ
        sf.write(target, tone(16000, 0.3, 1, 999, 9), 16000)
    elif change == "touch":
        os.utime(target, ns=(mtime + 1, mtime + 1))
    elif change == "older":
        os.utime(target, ns=(mtime - 10**9, mtime - 10**9))
    elif change == "add":
        target = root / "class1/new.wav"
        write_audio(target, tone(16000, 0.3), 16000)
    elif change == "remove":
        target.unlink()
    else:  # a file that became a broken symlink
        target.unlink()
        target.symlink_to(tmp_path / "gone.wav")
    after, new_shard_of = shard_files(root)
    path = target.relative_to(root).as_posix()
    affected = {shard_of.get(path), new_shard_of.get(path)} - {None}
    assert {name for name in after if before.get(name) != after[name]} == (
        affected if change != "add" else {new_shard_of[path]}
    )


@pytest.fixture(scope="module")
def built_once(tmp_path_factory):
    """A dataset and its build, made once, and a copy of both to restore from."""
    base = tmp_path_factory.mktemp("incremental")
    make_dataset(base / "data")
    run_snakemake(base / "work", config(base / "data"))
    return base, keep_a_copy(base, tmp_path_factory)


@pytest.fixture
def built(built_once):
    """The dataset and its build, as after one clean run, at the same absolute paths."""
    restore(*built_once)
    root, workdir = built_once[0] / "data", built_once[0] / "work"
    assert "Nothing to be done" in run_snakemake(workdir, config(root)).stderr
    return root, workdir


def test_parameter_change_reruns_only_that_feature_set(built):
    root, workdir = built
    before, store_a = outputs(workdir), sha256(workdir / "results/inc/a.h5")
    result = run_snakemake(workdir, config(root, n_mels_b=20))
    after = outputs(workdir)
    reasons = [line for line in result.stderr.splitlines() if "rebuilding" in line]
    assert reasons and all(
        re.fullmatch(r"melstore: b/s\d*-[0-9a-f]+: rebuilding: n_mels: 16 -> 20", line)
        for line in reasons
    ), reasons
    assert rewritten(before, after, "logs/inc/extract/a/") == set()
    jobs_b = rewritten(before, after, "logs/inc/extract/b/")
    assert len(jobs_b) == len(listed(workdir, "b"))  # every shard of b, under a new name
    assert sha256(workdir / "results/inc/a.h5") == store_a
    assert read_table(workdir / "results/inc/b.h5").shape[0] == N_FILES
    # clips built with other parameters are never reused
    assert computed_and_reused(workdir, jobs_b) == (N_FILES, 0)


def test_adding_a_file_computes_that_file_alone(built):
    root, workdir = built
    before, shards = outputs(workdir), {name: listed(workdir, name) for name in ("a", "b")}
    write_audio(root / "class1/new.wav", tone(16000, 0.3, 1, 999), 16000)
    result = run_snakemake(workdir, config(root))
    after = outputs(workdir)
    assert result.stderr.count("rebuilding: 1 file(s) added: class1/new.wav") == 2
    for name in ("a", "b"):
        assert "class1/new.wav" in set(read_table(workdir / f"results/inc/{name}.h5")["path"])
        # its shard's job alone runs: it decodes the new file and copies the shard's others
        jobs = rewritten(before, after, f"logs/inc/extract/{name}/")
        assert len(jobs) == 1 and len(listed(workdir, name) - shards[name]) == 1
        assert computed_and_reused(workdir, jobs) == (1, clips_of(workdir, jobs) - 1)


def test_removing_a_file_removes_its_row_and_computes_nothing(built):
    root, workdir = built
    before = outputs(workdir)
    (root / "class0/clip03.wav").unlink()
    result = run_snakemake(workdir, config(root))
    after = outputs(workdir)
    assert result.stderr.count("rebuilding: 1 file(s) removed: class0/clip03.wav") == 2
    for name in ("a", "b"):
        paths = set(read_table(workdir / f"results/inc/{name}.h5")["path"])
        assert "class0/clip03.wav" not in paths and len(paths) == N_FILES - 1
        jobs = rewritten(before, after, f"logs/inc/extract/{name}/")
        assert len(jobs) == 1
        assert computed_and_reused(workdir, jobs) == (0, clips_of(workdir, jobs))


def test_modifying_a_file_computes_it_alone_and_updates_its_row(built):
    root, workdir = built
    before = outputs(workdir)
    old = read_table(workdir / "results/inc/a.h5").set_index("path").loc["class2/clip05.wav"]
    write_audio(root / "class2/clip05.wav", tone(16000, 0.2, 2, 1234, 7) * 0.1, 16000)
    result = run_snakemake(workdir, config(root))
    after = outputs(workdir)
    assert result.stderr.count("rebuilding: 1 file(s) changed: class2/clip05.wav") == 2
    new = read_table(workdir / "results/inc/a.h5").set_index("path").loc["class2/clip05.wav"]
    assert new["source_xxh128"] == xxh128(root / "class2/clip05.wav") != old["source_xxh128"]
    assert new["peak_db"] < old["peak_db"] - 10
    # one decode; its shard's other clips are copied, and the result is a clean build's
    jobs = rewritten(before, after, "logs/inc/extract/a/")
    assert len(jobs) == 1
    assert computed_and_reused(workdir, jobs) == (1, clips_of(workdir, jobs) - 1)
    assert_stores_equal_a_clean_build(workdir, root)


def test_a_new_shard_size_copies_the_clips_of_the_shards_it_merges(built):
    root, workdir = built
    before, shards = outputs(workdir), listed(workdir, "a")
    result = run_snakemake(workdir, config(root, shard_size=12))
    jobs = rewritten(before, outputs(workdir), "logs/inc/extract/")
    assert result.stderr.count("no file of this shard changed since the last build") == len(jobs)
    # a merged shard copies from both of its previous files; a shard left whole keeps its file
    new = {Path(name).stem for name in listed(workdir, "a") - shards}
    assert {Path(job).stem for job in jobs if "/a/" in job} == new
    assert 0 < len(new) < len(listed(workdir, "a"))
    assert computed_and_reused(workdir, jobs) == (0, clips_of(workdir, jobs))
    assert_stores_equal_a_clean_build(workdir, root, shard_size=12)


def test_a_file_that_breaks_becomes_a_failure_row_as_in_a_clean_build(built):
    root, workdir = built
    (root / "class2/clip05.wav").write_bytes(b"RIFF, but no audio")
    run_snakemake(workdir, config(root))
    for name in ("a", "b"):
        failures = read_table(workdir / f"results/inc/{name}.h5", "failures")
        assert list(failures["path"]) == ["class2/clip05.wav"]
    assert_stores_equal_a_clean_build(workdir, root)


def test_workflow_refactors_and_docs_do_not_rerun_anything(tmp_path):
    workflow = tmp_path / "wf"
    workflow.mkdir()
    for part in (
        "Snakefile",
        "config.yaml",
        "workflow",
        "scripts",
        "profiles",
        "envs",
        "README.md",
    ):
        copy = shutil.copytree if (REPO / part).is_dir() else shutil.copy2
        copy(REPO / part, workflow / part)
    root = tmp_path / "data"
    make_dataset(root)
    run_snakemake(workflow, config(root), snakefile=workflow / "Snakefile")
    for edited in ("workflow/rules/extract.smk", "Snakefile", "README.md"):
        path = workflow / edited
        path.write_text(path.read_text() + "\n# a refactor that changes nothing\n")
    result = run_snakemake(workflow, config(root), snakefile=workflow / "Snakefile")
    assert "Nothing to be done" in result.stdout + result.stderr


def test_code_fingerprint_ignores_comments_and_docstrings_but_not_code(tmp_path):
    script = tmp_path / "probe.py"
    imports = "from melstore.errors import MelstoreError\n"
    script.write_text(f'"""Doc."""\n{imports}\ndef f(x):\n    """Twice."""\n    return 2 * x\n')
    original = script_fingerprint(script)
    script.write_text(f'"""Other."""\n{imports}\n\ndef f(x):  # comment\n    return 2 * x  # why\n')
    assert script_fingerprint(script) == original
    script.write_text(f'"""Doc."""\n{imports}\ndef f(x):\n    return 3 * x\n')
    assert script_fingerprint(script) != original


def verify(store, *args):
    command = [sys.executable, "-m", "melstore.cli", "verify", str(store), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def test_verify_reports_changed_missing_and_new_sources(built):
    root, workdir = built
    store = workdir / "results/inc/a.h5"
    clean = verify(store)
    assert clean.returncode == 0 and clean.stdout == ""
    assert "0 changed, 0 missing, 0 new" in clean.stderr

    write_audio(root / "class0/clip00.wav", tone(16000, 0.3, 1, 777), 16000)
    (root / "class1/clip01.wav").unlink()
    write_audio(root / "class2/extra.wav", tone(16000, 0.3), 16000)
    result = verify(store)

    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        "changed  class0/clip00.wav",
        "missing  class1/clip01.wav",
        "new      class2/extra.wav",
    ]


def test_verify_with_another_root_and_on_a_non_store(built, tmp_path):
    root, workdir = built
    moved = tmp_path / "moved"
    shutil.copytree(root, moved)
    assert verify(workdir / "results/inc/a.h5", "--root", str(moved)).returncode == 0
    (tmp_path / "x.h5").write_bytes(b"not hdf5")
    result = verify(tmp_path / "x.h5")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip() == f"Error: {tmp_path / 'x.h5'}: not an HDF5 file"


def test_a_rewrite_with_an_older_mtime_is_still_computed_again(built):
    root, workdir = built
    before = outputs(workdir)
    target = root / "class1/clip04.wav"
    old_stat = target.stat()
    write_audio(target, tone(16000, 0.25, 1, 555), 16000)  # other content, other size
    os.utime(target, ns=(old_stat.st_atime_ns, old_stat.st_mtime_ns - 10**12))  # older
    run_snakemake(workdir, config(root))
    jobs = rewritten(before, outputs(workdir), "logs/inc/extract/a/")
    assert len(jobs) == 1
    assert computed_and_reused(workdir, jobs) == (1, clips_of(workdir, jobs) - 1)
    row = read_table(workdir / "results/inc/a.h5").set_index("path").loc["class1/clip04.wav"]
    assert row["source_xxh128"] == xxh128(target)


def readme_recompute_commands():
    """The README's commands that force a recompute, as argument lists after `snakemake`."""
    lines = re.findall(r"^\.venv/bin/snakemake (.*--forcerun extract.*)$", README, re.M)
    return {comment.strip(): shlex.split(command) for command, comment in (
        line.split("#", 1) for line in lines
    )}  # fmt: skip


def rewrite_keeping_size_and_mtime(path):
    """Other audio in ``path``, with its size and modification time as before."""
    before = path.stat()
    samples, sr = sf.read(path, dtype="float32")
    sf.write(path, samples[::-1] * 0.5, sr, subtype="PCM_16")
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert path.stat().st_size == before.st_size


def test_the_readmes_recompute_commands_rebuild_a_same_size_same_mtime_rewrite(built):
    root, workdir = built
    commands = readme_recompute_commands()
    assert set(commands) == {"every set", "one set"}
    rewrite_keeping_size_and_mtime(root / "class2/clip05.wav")
    assert "Nothing to be done" in run_snakemake(workdir, config(root)).stderr  # invisible
    stores = {name: workdir / f"results/inc/{name}.h5" for name in ("a", "b")}
    assert [verify(store).returncode for store in stores.values()] == [1, 1]

    def run_readme(arguments):
        # the README's words, with this test's Snakefile, directory and feature set names
        arguments = ["features=[a]" if a == "features=[seed]" else a for a in arguments]
        command = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), *arguments]
        result = subprocess.run(command, cwd=workdir, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        return result.stderr

    before = outputs(workdir)
    output = run_readme(commands["one set"])
    assert "melstore: a/s" in output and "melstore: b/s" not in output
    assert "forced (--forcerun, or its file was deleted): computing every clip" in output
    jobs = rewritten(before, outputs(workdir), "logs/inc/extract/")
    assert computed_and_reused(workdir, jobs) == (N_FILES, 0)  # every shard of set a
    assert [verify(store).returncode for store in stores.values()] == [0, 1]
    output = run_readme(commands["every set"])
    assert [verify(store).returncode for store in stores.values()] == [0, 0]
    # no clip is reused from the rewritten file: each set equals a clean build
    assert_stores_equal_a_clean_build(workdir, root)


def test_reuse_clips_false_computes_every_clip_and_changing_it_reruns_nothing(built):
    root, workdir = built
    off = {**config(root), "reuse_clips": False}
    assert "Nothing to be done" in run_snakemake(workdir, off).stderr
    before = outputs(workdir)
    write_audio(root / "class2/clip05.wav", tone(16000, 0.2, 2, 1234, 7) * 0.1, 16000)
    run_snakemake(workdir, off)
    jobs = rewritten(before, outputs(workdir), "logs/inc/extract/")
    assert len(jobs) == 2  # the file's shard, in each set: all its clips computed
    assert computed_and_reused(workdir, jobs) == (clips_of(workdir, jobs), 0)
    assert_stores_equal_a_clean_build(workdir, root)


def stored(workdir, name):
    """The features and metadata of the store of feature set ``name``."""
    with h5py.File(workdir / f"results/inc/{name}.h5", "r") as index:
        return index["features"][()], read_table(workdir / f"results/inc/{name}.h5")


def test_a_file_touched_without_a_change_is_computed_again_alone(built):
    root, workdir = built
    stores = {name: stored(workdir, name) for name in ("a", "b")}
    before = outputs(workdir)
    os.utime(root / "class2/clip02.wav")
    result = run_snakemake(workdir, config(root))
    assert result.stderr.count("rebuilding: 1 file(s) changed: class2/clip02.wav") == 2
    jobs = rewritten(before, outputs(workdir), "logs/inc/extract/")
    assert len(jobs) == 2  # the file's shard, in each set: the file computed, the rest copied
    assert computed_and_reused(workdir, jobs) == (2, clips_of(workdir, jobs) - 2)
    for name, (features, table) in stores.items():
        now = stored(workdir, name)
        assert np.array_equal(now[0], features) and now[1].equals(table)


def test_a_shard_file_stays_one_build_after_its_change_for_open_readers(built):
    """Two generations at most: the gather deletes what neither its store nor the last lists."""
    root, workdir = built
    target = root / "class2/clip05.wav"
    first = listed(workdir, "a")
    features, table = stored(workdir, "a")
    row = int(np.flatnonzero(table["path"] == "class2/clip05.wav")[0])
    with h5py.File(workdir / "results/inc/a.h5", "r") as reader:  # opened before the rebuild
        write_audio(target, tone(16000, 0.2, 2, 1234, 7) * 0.1, 16000)
        run_snakemake(workdir, config(root))
        second = listed(workdir, "a")
        assert len(second - first) == 1 and on_disk(workdir, "a") == first | second
        assert np.array_equal(reader["features"][row], features[row])  # its values, no hole
    stat = target.stat()
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    run_snakemake(workdir, config(root))
    third = listed(workdir, "a")
    assert len(third - second) == 1 and on_disk(workdir, "a") == second | third
