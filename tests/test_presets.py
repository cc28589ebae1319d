"""The paper presets, built by the real workflow, equal their papers' front ends.

Each reference below is written from the README's documented parameters, not
from melstore.features.presets, so a preset that drifts from its documentation fails.
"""

import json

import h5py
import librosa
import numpy as np
import pytest

from melstore.store.format import read_table

N_CLIPS = 48
# The README's "Paper presets" parameters, as librosa calls, and the documented shapes.
DOCUMENTED = {
    "piczak2015": {
        "sr": 22050, "duration": 5.0, "shape": (N_CLIPS, 2, 60, 216),
        "mel": dict(n_fft=1024, hop_length=512, win_length=1024, pad_mode="reflect",
                    n_mels=60, fmin=0.0, fmax=11025.0),
        "db": dict(ref=1.0, top_db=80.0),
    },
    "salamon2017": {
        "sr": 44100, "duration": 2.972, "shape": (N_CLIPS, 128, 128),
        "mel": dict(n_fft=1024, hop_length=1024, win_length=1024, pad_mode="constant",
                    n_mels=128, fmin=0.0, fmax=22050.0),
        "db": dict(ref=np.max, top_db=80.0),
    },
    "panns": {
        "sr": 32000, "duration": 5.0, "shape": (N_CLIPS, 64, 501),
        "mel": dict(n_fft=1024, hop_length=320, win_length=1024, pad_mode="reflect",
                    n_mels=64, fmin=50.0, fmax=14000.0),
        "db": dict(ref=1.0, top_db=None),
    },
    "vggish": {"sr": 16000, "duration": 5.0, "shape": (N_CLIPS, 64, 498)},
}  # fmt: skip
DB_TOLERANCE = 0.05
# 0.05 dB of a magnitude is a factor of 10 ** (0.05 / 20): 0.0058 in natural-log units
LN_TOLERANCE = 0.005


def load(path, preset):
    spec = DOCUMENTED[preset]
    y, _ = librosa.load(path, sr=spec["sr"], duration=spec["duration"], res_type="soxr_hq")
    return librosa.util.fix_length(y, size=round(spec["duration"] * spec["sr"]))


def librosa_logmel(y, preset):
    spec = DOCUMENTED[preset]
    mel = librosa.feature.melspectrogram(
        y=y, sr=spec["sr"], window="hann", center=True, power=2.0, htk=False, norm="slaney",
        **spec["mel"],
    )  # fmt: skip
    return librosa.power_to_db(mel, amin=1e-10, **spec["db"])


def vggish_log_mel(y):
    """VGGish's mel_features.log_mel_spectrogram at 16 kHz, written out in numpy."""
    window_length, hop_length, fft_length = 400, 160, 512
    n_frames = 1 + (len(y) - window_length) // hop_length
    frames = np.stack([y[i * hop_length : i * hop_length + window_length] for i in range(n_frames)])
    periodic_hann = 0.5 - 0.5 * np.cos(2 * np.pi / window_length * np.arange(window_length))
    magnitude = np.abs(np.fft.rfft(frames.astype(np.float64) * periodic_hann, fft_length))

    def hertz_to_mel(hz):
        return 1127.0 * np.log(1.0 + hz / 700.0)

    bins_mel = hertz_to_mel(np.linspace(0.0, 8000.0, fft_length // 2 + 1))
    edges = np.linspace(hertz_to_mel(125.0), hertz_to_mel(7500.0), 64 + 2)
    weights = np.empty((fft_length // 2 + 1, 64))
    for band in range(64):
        lower, centre, upper = edges[band : band + 3]
        rising = (bins_mel - lower) / (centre - lower)
        falling = (upper - bins_mel) / (upper - centre)
        weights[:, band] = np.maximum(0.0, np.minimum(rising, falling))
    weights[0, :] = 0.0
    return np.log(magnitude @ weights + 0.01).T  # (bands, frames), as melstore stores it


def stored(workdir, preset):
    with h5py.File(workdir / f"results/demo/{preset}.h5") as f:
        return f["features"][()], read_table(workdir / f"results/demo/{preset}.h5")


@pytest.mark.parametrize("preset", sorted(DOCUMENTED))
def test_each_paper_preset_equals_its_reference_computation(demo_evaluated, preset):
    workdir, _, _ = demo_evaluated
    features, metadata = stored(workdir, preset)
    worst = 0.0
    for clip, path in zip(features, metadata["path"], strict=True):
        y = load(workdir / "resources/demo" / path, preset)
        expected = vggish_log_mel(y) if preset == "vggish" else librosa_logmel(y, preset)
        static = clip[0] if clip.ndim == 3 else clip  # piczak2015's channel 0
        assert static.shape == expected.shape, path
        worst = max(worst, float(np.abs(static - expected).max()))
    assert worst <= (LN_TOLERANCE if preset == "vggish" else DB_TOLERANCE)


def test_piczak_delta_channel_is_librosa_delta_of_the_log_mel(demo_evaluated):
    workdir, _, _ = demo_evaluated
    features, _ = stored(workdir, "piczak2015")
    expected = librosa.feature.delta(features[:, 0], width=9, order=1, axis=-1, mode="interp")
    np.testing.assert_allclose(features[:, 1], expected, atol=1e-4)


@pytest.mark.parametrize("preset", sorted(DOCUMENTED))
def test_store_shapes_and_attributes_follow_the_documented_parameters(demo_evaluated, preset):
    workdir, _, result = demo_evaluated
    shape = DOCUMENTED[preset]["shape"]
    with h5py.File(workdir / f"results/demo/{preset}.h5") as f:
        assert f["features"].shape == shape
        [shard] = f["shards/name"].asstr()[()]  # the demo's 48 files: one shard
        with h5py.File(workdir / "results/demo" / shard) as s:
            assert s["features"].chunks == (1, *shape[1:])  # a clip is a chunk
        assert f["axes/frequency"].shape == (shape[-2],)
        assert f["axes/time"].shape == (shape[-1],)
        params = json.loads(f.attrs["params"])
        axes = json.loads(f.attrs["feature_axes"])
        channels = json.loads(f.attrs["channels"]) if "channels" in f.attrs else None
    assert params["sr"] == DOCUMENTED[preset]["sr"]
    assert params["duration"] == DOCUMENTED[preset]["duration"]
    assert params["deltas"] is (len(shape) == 4)
    if params["deltas"]:
        assert axes == ["clip", "channel", "frequency", "time"]
        assert channels == ["logmel", "delta"]
    else:
        assert axes == ["clip", "frequency", "time"] and channels is None
    assert f"features {shape} float32" in result.stdout
