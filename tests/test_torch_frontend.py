"""The PyTorch front end gives a store's features from waveforms (``melstore.torch``).

Compared against the stores the real workflow built, clip by clip, from each
clip's file decoded and resampled as the build does.
"""

import math
import re
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import REPO, every_feature_set, merged_config, standalone_copy

import melstore
from melstore.errors import MelstoreError
from melstore.features.audio import decode
from melstore.features.extractor import FeatureExtractor, FeatureParams, Frontend
from melstore.features.kinds import FEATURE_KINDS, feature_kind
from melstore.features.presets import PRESETS, resolve_feature_set

pytestmark = pytest.mark.torch

FEATURE_SETS = every_feature_set()
# One set of each kind, one of them (piczak2015) with deltas and reflect padding: slower checks.
EXPORTED_SETS = ["seed", "logspec", "vggish", "piczak2015"]
NEAR_PEAK_DB = 60  # the range, below each clip's peak, held to PEAK_TOLERANCE_DB
PEAK_TOLERANCE_DB = 0.01
FLOOR_TOLERANCE_DB = 0.1  # further down: 0.06 dB measured, at -100 dB re full scale (panns)
DELTA_TOLERANCE = 0.001  # dB per frame, on every value of the delta channel


def store_path(demo_evaluated, name):
    return demo_evaluated[0] / f"results/demo/{name}.h5"


def front_end(store):
    from melstore.torch import FrontEnd

    return FrontEnd.from_store(store)


def prepared_waveforms(store, root) -> list[np.ndarray]:
    """Each stored clip's audio as the build computed its features: decoded, resampled, fixed."""
    params = FeatureParams.from_dict(store.params)
    extractor = FeatureExtractor(Frontend.from_arrays(params, store.frontend))
    waveforms = []
    for path in store.metadata_columns["path"]:
        y, info = decode(root / path, max_duration=params.duration)
        waveforms.append(extractor.prepare(y, sr=info.sample_rate)[0])
    return waveforms


def run(module, waveforms) -> np.ndarray:
    import torch

    with torch.inference_mode():
        return module(torch.from_numpy(np.stack(waveforms))).numpy()


def decibels_per_unit(params: FeatureParams) -> float:
    """dB per stored unit: 1 for dB, else dB per natural log of ``|X| ** power``."""
    return 1.0 if feature_kind(params.kind).decibels else 20 / (params.power * math.log(10))


def errors_db(computed, stored, *, params) -> tuple[float, float]:
    """Largest error in dB within NEAR_PEAK_DB of each clip's peak, and below that.

    Clips are (n_bins, n_frames), or their channel 0 with deltas.
    """
    if params.deltas:
        computed, stored = computed[:, 0], stored[:, 0]
    scale = decibels_per_unit(params)
    errors = np.abs(computed - stored) * scale
    level = stored * scale
    near_peak = level >= level.max(axis=(-2, -1), keepdims=True) - NEAR_PEAK_DB
    return float(errors[near_peak].max()), float(errors[~near_peak].max(initial=0.0))


def test_the_stores_compared_cover_every_kind_and_the_exported_ones_deltas():
    assert set(PRESETS) <= set(FEATURE_SETS)
    assert {resolve_feature_set(name, {}).kind for name in PRESETS} == set(FEATURE_KINDS)
    assert any(resolve_feature_set(name, {}).deltas for name in EXPORTED_SETS)


@pytest.mark.parametrize("name", FEATURE_SETS)
def test_the_front_end_gives_the_stored_features(demo_evaluated, name):
    workdir, config, _ = demo_evaluated
    with melstore.open(store_path(demo_evaluated, name)) as store:
        params = FeatureParams.from_dict(store.params)
        computed = run(
            front_end(store), prepared_waveforms(store, workdir / config["dataset"]["root"])
        )
        stored = store.read()
    assert computed.shape == stored.shape == (48, *params.clip_shape)
    near_peak, near_floor = errors_db(computed, stored, params=params)
    assert near_peak <= PEAK_TOLERANCE_DB and near_floor <= FLOOR_TOLERANCE_DB
    if params.deltas:
        assert np.abs(computed[:, 1] - stored[:, 1]).max() <= DELTA_TOLERANCE


def test_a_variable_length_store_gives_each_clip_its_own_frames(variable_build):
    workdir, path = variable_build
    with melstore.open(path) as store:
        params = FeatureParams.from_dict(store.params)
        waveforms = prepared_waveforms(store, Path(merged_config(workdir)["dataset"]["root"]))
        module = front_end(path)
        for row, y in enumerate(waveforms):
            stored = store.clip(row)
            computed = run(module, [y])[0]
            assert computed.shape == stored.shape == (params.n_mels, params.frames_for(len(y)))
            near_peak, near_floor = errors_db(computed[None], stored[None], params=params)
            assert near_peak <= PEAK_TOLERANCE_DB and near_floor <= FLOOR_TOLERANCE_DB


def preset_front_end(name: str, **overrides):
    """A preset's front end (built with librosa, as the workflow does) and its numpy extractor."""
    from melstore.torch import FrontEnd

    params = resolve_feature_set("test", {"test": {"preset": name, **overrides}})
    frontend = Frontend.build(params)
    return FrontEnd(frontend=frontend), FeatureExtractor(frontend)


def test_each_clip_of_a_batch_is_scaled_by_its_own_peak_and_silence_lies_at_the_floor():
    module, extractor = preset_front_end("seed")
    rng = np.random.default_rng(0)
    n = module.params.n_samples
    loud = (0.5 * np.sin(np.arange(n) * 0.05) + 0.01 * rng.standard_normal(n)).astype(np.float32)
    batch = [loud, np.zeros(n, np.float32), loud / 1000]
    computed = run(module, batch)
    expected = np.stack([extractor(y, sr=module.params.sr).features for y in batch])
    np.testing.assert_allclose(computed, expected, atol=PEAK_TOLERANCE_DB)
    assert (computed[1] == -module.params.top_db).all()
    assert computed[0].max() == computed[2].max() == 0


@pytest.mark.parametrize("pad_mode", ["constant", "reflect", "edge", "symmetric"])
def test_every_padding_mode_pads_as_numpy_even_a_clip_shorter_than_the_padding(pad_mode):
    module, extractor = preset_front_end("seed", pad_mode=pad_mode, n_mels=32, duration=None)
    rng = np.random.default_rng(1)
    for n_samples in (300, 5000):  # n_fft // 2 is 1024
        y = (0.3 * rng.standard_normal(n_samples)).astype(np.float32)
        expected = extractor(y, sr=module.params.sr).features
        np.testing.assert_allclose(run(module, [y])[0], expected, atol=PEAK_TOLERANCE_DB)


@pytest.mark.parametrize("name", ["logspec", "vggish"])
def test_a_clip_shorter_than_a_frame_is_padded_to_one_frame(name):
    module, extractor = preset_front_end(name, duration=None)
    y = np.full(100, 0.25, np.float32)
    expected = extractor(y, sr=module.params.sr).features
    assert expected.shape[-1] == 1
    np.testing.assert_allclose(run(module, [y])[0], expected, atol=PEAK_TOLERANCE_DB)


@pytest.mark.parametrize("name", EXPORTED_SETS)
def test_the_exported_program_gives_the_module_s_features(demo_evaluated, name):
    import torch

    module = front_end(store_path(demo_evaluated, name))
    n = module.params.n_samples
    example = torch.randn(2, n, generator=torch.Generator().manual_seed(0)) * 0.1
    batch = torch.export.Dim("batch")
    program = torch.export.export(module, (example,), dynamic_shapes=({0: batch},))
    waveforms = torch.randn(5, n, generator=torch.Generator().manual_seed(1)) * 0.1
    with torch.inference_mode():
        expected = module(waveforms)
        exported = program.module()(waveforms)
    torch.testing.assert_close(exported, expected, atol=1e-4, rtol=0)


def test_to_moves_every_buffer_and_computes_in_the_new_dtype(demo_evaluated):
    import torch

    module = front_end(store_path(demo_evaluated, "piczak2015"))
    buffers = dict(module.named_buffers())
    assert set(buffers) == {"window", "filterbank", "delta_kernel"}
    assert all(b.dtype == torch.float32 for b in buffers.values())
    waveforms = torch.randn(2, module.params.n_samples, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        single = module(waveforms)
        double = module.to(torch.float64)(waveforms.double())
    assert all(b.dtype == torch.float64 for b in module.buffers()) and double.dtype == torch.float64
    torch.testing.assert_close(double.float(), single, atol=1e-3, rtol=0)
    module.to("meta")
    assert all(b.device.type == "meta" for b in module.buffers())
    on_meta = module(torch.empty(3, 100, dtype=torch.float64, device="meta"))
    assert on_meta.shape == (3, *module.params.clip_shape) and on_meta.device.type == "meta"


@pytest.mark.parametrize(
    ("shape", "dtype", "device", "problem"),
    [
        ((66150,), "float32", "cpu", "waveforms must be (batch, samples); got shape (66150,) "
         "(one clip: waveforms[None])"),
        ((2, 1, 66150), "float32", "cpu", "waveforms must be (batch, samples); got shape "
         "(2, 1, 66150) (one clip: waveforms[None])"),
        ((2, 0), "float32", "cpu", "waveforms hold no samples"),
        ((2, 66150), "float64", "cpu", "waveforms are torch.float64, the module computes in "
         "torch.float32; cast them with .to(torch.float32)"),
        ((2, 66150), "float32", "meta", "waveforms are on meta, the module on cpu; "
         "move one with .to(device)"),
    ],
)  # fmt: skip
def test_wrong_waveforms_are_refused_in_one_line_naming_them(shape, dtype, device, problem):
    import torch

    module, _ = preset_front_end("seed")
    waveforms = torch.zeros(shape, dtype=getattr(torch, dtype), device=device)
    with pytest.raises(MelstoreError) as err:
        module(waveforms)
    assert str(err.value) == f"FrontEnd of logmel at 22050 Hz: {problem}"


def test_a_store_without_its_front_end_arrays_is_refused(demo_evaluated, tmp_path):
    old = standalone_copy(store_path(demo_evaluated, "seed"), tmp_path / "old.h5")
    with h5py.File(old, "r+") as f:
        del f["frontend"]
    with pytest.raises(MelstoreError) as err:
        front_end(old)
    assert str(err.value) == (
        f"{old} keeps no window and filter bank (written by an older melstore); "
        "rebuild it with the workflow"
    )


def test_the_documented_inference_code_runs_on_the_demo(demo_evaluated, tmp_path, monkeypatch):
    import torch

    text = (REPO / "docs/reading.md").read_text()
    section = text.split("### In PyTorch\n", 1)[1].split("\n## ", 1)[0]
    code = "\n".join(re.findall(r"```python\n(.*?)```", section, re.S))
    for folder in ("results", "resources"):
        (tmp_path / folder).symlink_to(demo_evaluated[0] / folder)
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(code, "docs/reading.md, In PyTorch", "exec"), namespace)  # noqa: S102
    assert namespace["features"].shape == (1, 128, 130)
    program = torch.export.load("seed-frontend.pt2")
    waveforms = torch.randn(3, 66150, generator=torch.Generator().manual_seed(3)) * 0.1
    with torch.inference_mode():
        torch.testing.assert_close(
            program.module()(waveforms), namespace["front_end"](waveforms), atol=1e-4, rtol=0
        )
