"""Job process tuning: thread pools and the C heap."""

import subprocess
import sys

import pytest
from conftest import run_python

PINNED_POOLS = (
    "import os\n"
    "from melstore.pipeline.runtime import pin_threads, THREAD_ENV_VARS\n"
    "{before}pin_threads(1)\n{after}"
    "import scipy.fft, scipy.sparse.linalg\n"
    "from threadpoolctl import threadpool_info\n"
    "print(sorted({{str(pool['num_threads']) for pool in threadpool_info()}}),"
    " sorted({{os.environ[v] for v in THREAD_ENV_VARS}}), len(threadpool_info()) > 0)\n"
)


@pytest.mark.parametrize("numpy_first", [True, False], ids=["numpy-loaded", "numpy-later"])
def test_pin_threads_limits_every_pool_whether_loaded_before_or_after(numpy_first):
    load = "import numpy\n"
    before, after = (load, "") if numpy_first else ("", load)
    result = run_python(PINNED_POOLS.format(before=before, after=after))
    assert result.stdout.strip() == "['1'] ['1'] True", result.stderr


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
