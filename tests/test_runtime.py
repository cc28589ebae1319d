"""Job process tuning: thread pools and the C heap."""

import subprocess
import sys

import pytest
from conftest import run_python


def test_pin_threads_sets_every_pool_before_numpy_loads():
    result = run_python(
        "from melstore.pipeline.runtime import pin_threads, THREAD_ENV_VARS\n"
        "import os\n"
        "pin_threads(3)\n"
        "import numpy\n"
        "print(sorted({os.environ[v] for v in THREAD_ENV_VARS}))\n"
    )
    assert result.stdout.strip() == "['3']", result.stderr


def test_pin_threads_refuses_to_run_after_numpy():
    result = run_python(
        "import numpy\nfrom melstore.pipeline.runtime import pin_threads\npin_threads(1)\n"
    )
    assert result.returncode != 0 and "before numpy is imported" in result.stderr


FAULTS_PER_CLIP = """
import resource, sys
from melstore.pipeline.runtime import retain_freed_memory
if sys.argv[1] == "tuned":
    assert retain_freed_memory()
import numpy as np
import soundfile as sf
from melstore.features.audio import decode
from melstore.features.extractor import FeatureExtractor, FeatureParams, Frontend
from melstore.features.presets import PRESETS
extractor = FeatureExtractor(Frontend.build(FeatureParams.from_dict(PRESETS["seed"])))
y = np.random.default_rng(0).standard_normal(4 * 44100).astype(np.float32) * 0.1
sf.write(sys.argv[2], y, 44100, subtype="PCM_16")
def clip():
    y, info = decode(sys.argv[2], max_duration=3.0)
    extractor(y, sr=info.sample_rate)
clip()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    clip()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 20)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_retained_heap_memory_avoids_page_faults_on_every_clip(tmp_path):
    faults = {}
    for mode in ("default", "tuned"):
        result = subprocess.run(
            [sys.executable, "-c", FAULTS_PER_CLIP, mode, str(tmp_path / f"{mode}.wav")],
            capture_output=True,
            text=True,
        )
        faults[mode] = float(result.stdout)
    # 4 s mono 44.1 kHz clips, one after another: glibc's defaults map and unmap
    # their buffers, ~750 page faults per clip (numpy 2.4); mixed rates fault less
    assert faults["tuned"] < 10 and faults["tuned"] <= faults["default"]
