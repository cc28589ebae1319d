"""Job process tuning: thread pools and the C heap."""

import subprocess
import sys

import pytest
from conftest import run_python


def test_pin_threads_sets_every_pool_before_numpy_loads():
    result = run_python(
        "from melstore.runtime import pin_threads, THREAD_ENV_VARS\n"
        "import os\n"
        "pin_threads(3)\n"
        "import numpy\n"
        "print(sorted({os.environ[v] for v in THREAD_ENV_VARS}))\n"
    )
    assert result.stdout.strip() == "['3']", result.stderr


def test_pin_threads_refuses_to_run_after_numpy():
    result = run_python("import numpy\nfrom melstore.runtime import pin_threads\npin_threads(1)\n")
    assert result.returncode != 0 and "before numpy is imported" in result.stderr


FAULTS_PER_CLIP = """
import resource, sys
from melstore.runtime import retain_freed_memory
if sys.argv[1] == "tuned":
    assert retain_freed_memory()
import numpy as np
from melstore.features import FeatureExtractor, FeatureParams, Frontend
from melstore.presets import PRESETS
extractor = FeatureExtractor(Frontend.build(FeatureParams.from_dict(PRESETS["seed"])))
y = np.random.default_rng(0).standard_normal(4 * 48000).astype(np.float32) * 0.1
extractor(y, sr=48000)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    extractor(y, sr=48000)
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 20)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_retained_heap_memory_avoids_page_faults_on_every_clip():
    faults = {}
    for mode in ("default", "tuned"):
        result = subprocess.run(
            [sys.executable, "-c", FAULTS_PER_CLIP, mode], capture_output=True, text=True
        )
        faults[mode] = float(result.stdout)
    # numpy 2.4 on Python 3.11: ~990 faults per clip by default; numpy 2.5: ~26
    assert faults["tuned"] < min(10, faults["default"])
