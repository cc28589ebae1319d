"""Crash safety: kill -9 at any moment, rerun, and get the same bytes as a clean build."""

import functools
import hashlib
import os
import re
import signal
import subprocess
import time

import pytest
from conftest import run_snakemake, snakemake_command, tone, write_audio


def make_dataset(root, n=160):
    for i in range(n):
        write_audio(root / f"c{i % 4}/clip{i:03d}.wav", tone(44100, 1.5, 2, 200 + 7 * i, i), 44100)


def config(root):
    return {"dataset": {"name": "crash", "layout": "folder", "root": str(root)},
            "features": ["seed"], "shard_size": 8}  # fmt: skip


def start(workdir):
    return subprocess.Popen(
        snakemake_command(workdir),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_kill_9_at_three_moments_then_rerun_gives_the_clean_bytes(tmp_path):
    root = tmp_path / "data"
    make_dataset(root)
    clean = tmp_path / "clean"
    run_snakemake(clean, config(root))

    killed = tmp_path / "killed"
    run_snakemake(killed, config(root), "-n")  # writes my.yaml
    for delay in (2.0, 3.5, 5.0):
        process = start(killed)
        time.sleep(delay)
        os.killpg(process.pid, signal.SIGKILL)  # the whole group: snakemake and its jobs
        process.wait()
        run_snakemake(killed, config(root), "--unlock")
    store = "results/crash/seed.h5"
    assert not (killed / store).exists()  # the kills did interrupt the build
    run_snakemake(killed, config(root))

    assert sha256(killed / store) == sha256(clean / store)
    assert list((killed / "results").rglob(".*.tmp*")) == []  # killed writers' files are gone


@pytest.fixture
def tiny_disk(tmp_path):
    """A 1 MB file system, too small for the store."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
                            capture_output=True)  # fmt: skip
    if result.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def test_a_full_disk_gives_one_line_and_no_partial_store(tmp_path, tiny_disk):
    root = tmp_path / "data"
    make_dataset(root, n=40)
    workdir = tmp_path / "work"
    workdir.mkdir()
    (workdir / "results").symlink_to(tiny_disk)
    result = run_snakemake(workdir, config(root), check=False)
    assert result.returncode != 0
    assert "melstore: disk full (no space left on device) while writing" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tiny_disk / "crash/seed.h5").exists()
    assert list(tiny_disk.rglob(".*.tmp*")) == []


def test_a_second_run_on_the_same_directory_is_refused_by_the_lock(tmp_path):
    root = tmp_path / "data"
    make_dataset(root, n=60)
    workdir = tmp_path / "work"
    run_snakemake(workdir, config(root), "-n")
    first = start(workdir)
    try:
        time.sleep(2.0)
        second = run_snakemake(workdir, config(root), check=False)
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    assert second.returncode != 0
    assert "Directory cannot be locked" in second.stdout + second.stderr


def test_ctrl_c_gives_one_line_per_interrupted_job_and_the_rerun_resumes(tmp_path):
    root = tmp_path / "data"
    make_dataset(root, n=800)  # seconds of work per set, so that Ctrl-C lands inside a job
    workdir = tmp_path / "work"
    two_sets = {**config(root), "features": ["seed", "logspec"], "shard_size": 1000}
    run_snakemake(workdir, two_sets, "-n")  # writes my.yaml
    process = subprocess.Popen(
        snakemake_command(workdir),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        # as in a terminal: a test run started in the background (`cmd &`) ignores SIGINT
        preexec_fn=functools.partial(signal.signal, signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 60
    logs = workdir / "logs/crash/extract"
    while not any("files" in log.read_text() for log in logs.rglob("*.log")):
        assert time.monotonic() < deadline and process.poll() is None, "no extraction started"
        time.sleep(0.1)
    time.sleep(0.2)
    os.killpg(process.pid, signal.SIGINT)  # what a terminal's Ctrl-C sends
    output = process.communicate(timeout=120)[0]

    assert process.returncode != 0
    assert "Traceback" not in output and "KeyboardInterrupt" not in output
    interrupted = [line for line in output.splitlines() if "interrupted" in line]
    assert interrupted, output[-3000:]
    for line in interrupted:
        assert re.fullmatch(
            r"melstore: extract (seed|logspec)/s/[0-9a-f]+ interrupted; "
            r"run the same command again to resume",
            line,
        )
    run_snakemake(workdir, two_sets)
    clean = tmp_path / "clean"
    run_snakemake(clean, two_sets)
    for name in ("seed", "logspec"):
        store = f"results/crash/{name}.h5"
        assert sha256(workdir / store) == sha256(clean / store)
