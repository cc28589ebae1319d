"""The demo through a real SLURM (profiles/slurm) must give the same bytes as a local build.

Needs a SLURM that answers `sinfo`; as root, `tests/cluster/slurm.sh start` brings up a
single-node one on localhost (`.ci/run` does this) and `slurm.sh stop` removes it.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess

import pytest
import yaml
from conftest import REPO, run_snakemake


def _slurm_answers() -> bool:
    if shutil.which("sinfo") is None:
        return False
    return subprocess.run(["sinfo", "-h"], capture_output=True, timeout=30).returncode == 0


pytestmark = [
    pytest.mark.slurm,
    pytest.mark.skipif(
        not _slurm_answers(),
        reason="no SLURM answers here; as root, `tests/cluster/slurm.sh start` starts one",
    ),
]

# The demo, split so that each feature set has several extraction jobs.
CONFIG = {
    **yaml.safe_load((REPO / "config.yaml").read_text()),
    "features": ["seed", "logspec"],
    "shard_size": 24,
    "hdf5_file_locking": False,
}
STORES = ["results/demo/seed.h5", "results/demo/logspec.h5"]


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def slurm_states(job_ids: list[str]) -> dict[str, str]:
    """Each job's state as SLURM's own squeue reports it (finished jobs stay for MinJobAge)."""
    out = subprocess.run(
        ["squeue", "-h", "-t", "all", "-j", ",".join(job_ids), "-o", "%i %T"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return dict(line.split() for line in out.splitlines())


def test_demo_through_slurm_matches_a_local_build_byte_for_byte(tmp_path):
    on_slurm, local = tmp_path / "slurm", tmp_path / "local"
    result = run_snakemake(
        on_slurm,
        CONFIG,
        "--profile", str(REPO / "profiles/slurm"),
        "--set-threads", "extract=2",  # the local node has 2 CPUs; the profile asks for 4
        # Short status-check intervals keep the test small; clusters keep the defaults.
        "--slurm-init-seconds-before-status-checks", "1",
        "--seconds-between-status-checks", "1",
    )  # fmt: skip
    run_snakemake(local, CONFIG)

    for store in STORES:
        assert sha256(on_slurm / store) == sha256(local / store), store

    # Extraction, the manifest and gather went through sbatch; SLURM knows every job completed.
    submitted = re.findall(r"submitted with SLURM jobid (\d+)", result.stderr)
    shards = list((on_slurm / "logs/demo/extract").glob("*/*.log"))  # a log per shard job
    assert (on_slurm / "logs/demo/manifest.log").exists()  # one manifest job for the dataset
    assert len(submitted) == len(shards) + 1 + len(STORES)
    assert len(shards) >= 4
    assert set(slurm_states(submitted).values()) == {"COMPLETED"}

    # Per-job logs: the rule's own under logs/demo, SLURM's stdout under logs/slurm.
    for job_id in submitted:
        assert list((on_slurm / "logs/slurm").glob(f"rule_*/**/{job_id}.log")), job_id
    extract_logs = list((on_slurm / "logs/demo/extract").glob("*/*.log"))
    assert len(extract_logs) == len(shards)
    assert all("HDF5_USE_FILE_LOCKING=FALSE" in log.read_text() for log in extract_logs)
