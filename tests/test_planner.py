"""`melstore plan`: predictions checked against real builds of the real snakemake."""

import json
import os
import re
import subprocess
from pathlib import Path

import h5py
import pytest
import yaml
from conftest import (
    MELSTORE,
    REPO,
    USER_CONFIG,
    run_snakemake,
    snakemake_command,
    store_bytes,
    tone,
    write_audio,
)

# What the planner must give, as README.md and `melstore plan --help` say.
JSON_KEYS = {"files", "cpu_seconds", "wall_seconds", "cores", "jobs", "store_bytes", "mem_mb"}


def plan(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    """``melstore plan --configfile my.yaml`` in ``workdir``, as README.md runs it."""
    return subprocess.run(
        [MELSTORE, "plan", "--configfile", USER_CONFIG, *args],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=300,
    )


def planned(workdir: Path, *args: str) -> dict:
    result = plan(workdir, "--json", *args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def extraction_jobs(workdir: Path, *targets: str) -> int:
    """How many extraction jobs snakemake would run to build everything from clean."""
    result = subprocess.run(
        snakemake_command(workdir, *targets, "-n", "--forceall", "--quiet", "rules"),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    return int(re.search(r"^extract\s+(\d+)", result.stdout, re.MULTILINE).group(1))


def test_plan_predicts_every_presets_store_size_and_jobs(demo_evaluated):
    """Every preset of the registry, on the demo: the bytes and job count of what was built."""
    workdir, config, _ = demo_evaluated
    prediction = planned(workdir, "--cores", "2")
    assert JSON_KEYS <= prediction.keys()
    assert prediction["files"] == 48 and prediction["cores"] == 2
    assert prediction["jobs"] == extraction_jobs(workdir, "all")
    assert set(prediction["store_bytes"]) == set(config["features"])
    for name, predicted in prediction["store_bytes"].items():
        built = store_bytes(workdir / f"results/demo/{name}.h5")
        assert 0.9 <= predicted / built <= 1.1, (name, predicted, built)
    assert 0 < prediction["cpu_seconds"] < 2 * prediction["wall_seconds"]
    assert prediction["mem_mb"] >= 100
    # the demo's formats and rates (README: 8-96 kHz, PCM, float, ADPCM): each group timed
    groups = prediction["groups"]
    assert len({(g["format"], g["sample_rate"]) for g in groups}) == len(groups) >= 5
    assert all(g["timed"] >= 1 for g in groups)


def test_plan_of_variable_length_clips_and_a_broken_file(variable_build):
    """No fixed duration, and an unreadable file: its share stores nothing."""
    workdir, store = variable_build
    prediction = planned(workdir, "--cores", "1")
    assert prediction["files"] == 7
    assert prediction["unreadable_share"] == pytest.approx(1 / 7)
    predicted = prediction["store_bytes"]["var"]
    assert 0.9 <= predicted / store_bytes(store) <= 1.1
    with h5py.File(store) as opened:
        assert len(opened["metadata/clip_id"]) == 6


def folder_dataset(root: Path) -> None:
    """Three formats and rates: WAV 16 kHz, FLAC 44.1 kHz stereo, WAV 8 kHz float."""
    for i in range(6):
        write_audio(root / f"dog/d{i}.wav", tone(16000, 1.0, seed=i), 16000)
        write_audio(root / f"cat/c{i}.flac", tone(44100, 1.5, 2, 300, i), 44100, container="FLAC")
    write_audio(root / "cat/f.wav", tone(8000, 0.5), 8000, subtype="FLOAT")


@pytest.fixture(scope="module")
def folder_work(tmp_path_factory):
    root = tmp_path_factory.mktemp("plan-data")
    folder_dataset(root)
    workdir = tmp_path_factory.mktemp("plan-work")
    config = {
        "dataset": {"name": "pets", "layout": "folder", "root": str(root)},
        "features": ["small", "compact"],
        "feature_sets": {
            "small": {"preset": "seed", "n_mels": 40, "duration": 1.0},
            "compact": {"preset": "seed", "n_mels": 40, "duration": 1.0, "precision_db": 0.05},
        },
        "shard_size": 4,
    }
    (workdir / USER_CONFIG).write_text(yaml.safe_dump(config))
    return root, workdir, config


def listing(folder: Path) -> dict[str, tuple[int, int]]:
    return {
        str(path.relative_to(folder)): (path.stat().st_size, path.stat().st_mtime_ns)
        for path in sorted(folder.rglob("*"))
    }


def test_plan_writes_nothing_and_is_seeded(folder_work):
    root, workdir, _ = folder_work
    before = listing(root), listing(workdir)
    first = planned(workdir, "--cores", "2", "--seed", "3")
    again = planned(workdir, "--cores", "2", "--seed", "3")
    assert (listing(root), listing(workdir)) == before
    timed = [(g["format"], g["sample_rate"], g["timed"]) for g in first["groups"]]
    assert timed == [(g["format"], g["sample_rate"], g["timed"]) for g in again["groups"]]
    assert {(f, rate) for f, rate, _ in timed} == {("FLAC", 44100), ("WAV", 8000), ("WAV", 16000)}


def test_plan_against_the_build_with_shards_and_a_bound(folder_work):
    """Jobs follow shard_size; the compact store is predicted smaller, as it is built."""
    root, workdir, config = folder_work
    prediction = planned(workdir, "--cores", "2")
    assert prediction["jobs"] == extraction_jobs(workdir, "results/pets/small.h5",
                                                 "results/pets/compact.h5")  # fmt: skip
    run_snakemake(workdir, config, "results/pets/small.h5", "results/pets/compact.h5")
    for name in ("small", "compact"):
        built = store_bytes(workdir / f"results/pets/{name}.h5")
        assert 0.9 <= prediction["store_bytes"][name] / built <= 1.1, name
    sets = prediction["feature_sets"]
    assert sets["compact"]["precision_db"] == 0.05 and sets["small"]["precision_db"] is None
    assert sets["compact"]["bytes_per_clip"] < sets["small"]["bytes_per_clip"] / 2
    # more cores: more workers per job, each with its own memory
    wide = planned(workdir, "--cores", "8")
    assert wide["cores"] == 8 and wide["jobs"] == prediction["jobs"]
    assert wide["mem_mb"] >= prediction["mem_mb"] + 6 * 75


def test_plan_for_people_gives_the_cluster_settings(folder_work):
    _, workdir, _ = folder_work
    result = plan(workdir, "--cores", "2")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert re.search(r"^small\s+\d", out, re.MULTILINE)
    assert re.search(r"^compact\s+.*precision_db 0.05", out, re.MULTILINE)
    shard_size = int(re.search(r"^  shard_size: (\d+)$", out, re.MULTILINE).group(1))
    assert 1000 <= shard_size <= 50000
    block = yaml.safe_load(out[out.index("  set-resources:") :])
    requests = block["set-resources"]
    assert set(requests["extract"]) == {"cpus_per_task", "mem_mb", "runtime"}
    assert set(requests["gather"]) == set(requests["manifest"]) == {"mem_mb", "runtime"}
    assert requests["extract"]["mem_mb"] >= 100 and requests["gather"]["runtime"] >= 10
    # the CPUs the SLURM profile gives an extraction job, whatever they are
    profile = yaml.safe_load((REPO / "profiles/slurm/profile.yaml").read_text())
    assert requests["extract"]["cpus_per_task"] == profile["set-threads"]["extract"]
    assert f"profiles/slurm, {profile['set-threads']['extract']} CPUs per extraction job" in out


def test_plan_refuses_a_bad_config_in_one_line(folder_work, tmp_path):
    _, workdir, config = folder_work
    bad = {**config, "shard_size": 0}
    (tmp_path / USER_CONFIG).write_text(yaml.safe_dump(bad))
    result = plan(tmp_path)
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert "shard_size" in line
    assert os.listdir(tmp_path) == [USER_CONFIG]


def test_plan_of_the_demo_before_it_is_generated_says_how(tmp_path):
    """The committed config.yaml plans the demo, which only the workflow's first run writes."""
    (tmp_path / USER_CONFIG).write_text("features: [seed]\n")
    result = plan(tmp_path)
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert "demo is generated by the workflow's first run" in line
    assert os.listdir(tmp_path) == [USER_CONFIG]
