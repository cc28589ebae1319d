"""The features equal the recipes they name: librosa's log-mel and the seed's scipy one."""

import librosa
import numpy as np
import pytest
import scipy.signal
from conftest import tone

from melstore.features.audio import decode
from melstore.features.extractor import FeatureExtractor, FeatureParams, Frontend, delta
from melstore.features.presets import PRESETS

SEED = FeatureParams.from_dict(PRESETS["seed"])
LOGSPEC = FeatureParams.from_dict(PRESETS["logspec"])


def extract(path, params):
    y, info = decode(path, max_duration=params.duration)
    return FeatureExtractor(Frontend.build(params))(y, sr=info.sample_rate)


def demo_clips(root):
    return sorted((root / "audio").rglob("*.wav"))


def test_seed_preset_equals_the_librosa_seed_recipe_on_every_demo_clip(demo_root):
    clips = demo_clips(demo_root)
    assert len(clips) >= 20
    worst = 0.0
    for path in clips:
        y, sr = librosa.load(path, sr=22050, duration=3)
        y = librosa.util.fix_length(y, size=3 * 22050)
        expected = librosa.power_to_db(
            librosa.feature.melspectrogram(y=y, sr=sr), ref=np.max, amin=1e-10, top_db=80
        )
        ours = extract(path, SEED).features
        assert ours.shape == expected.shape == (128, 130), path.name
        worst = max(worst, float(np.abs(ours - expected).max()))
    assert worst <= 0.05


def test_logspec_preset_equals_the_seed_scipy_recipe_on_every_demo_clip(demo_root):
    for path in demo_clips(demo_root):
        y, _ = librosa.load(path, sr=16000, duration=3)
        y = librosa.util.fix_length(y, size=3 * 16000)
        _, _, spec = scipy.signal.spectrogram(y, fs=16000, window="hann", nperseg=320, noverlap=160)
        # librosa.load gives float32, and numpy keeps the recipe in float32 to the log
        expected = np.log(spec.T + 1e-10)
        assert expected.dtype == np.float32
        ours = extract(path, LOGSPEC).features
        # melstore stores (bins, frames); the seed's recipe is transposed
        np.testing.assert_array_equal(ours.T, expected, err_msg=path.name)


def with_params(base, **changes):
    return FeatureParams.from_dict({**base.to_dict(), **changes})


@pytest.mark.parametrize(
    "changes",
    [
        {"ref": 1.0, "top_db": None},
        {"pad_mode": "reflect", "n_fft": 1024, "win_length": 1024, "hop_length": 512, "n_mels": 60},
        {"center": False, "win_length": 400, "n_fft": 512, "hop_length": 160, "sr": 16000,
         "fmax": 8000.0, "htk": True, "norm": None, "power": 1.0},
    ],
)  # fmt: skip
def test_logmel_matches_librosa_for_other_parameters(changes):
    params = with_params(SEED, **changes)
    y = tone(params.sr, 3.0)[:, 0]
    expected = librosa.power_to_db(
        librosa.feature.melspectrogram(
            y=y, sr=params.sr, n_fft=params.n_fft, hop_length=params.hop_length,
            win_length=params.win_length, window=params.window, center=params.center,
            pad_mode=params.pad_mode, power=params.power, n_mels=params.n_mels,
            fmin=params.fmin, fmax=params.fmax, htk=params.htk, norm=params.norm,
        ),
        ref=np.max if params.ref == "max" else params.ref,
        amin=params.amin,
        top_db=params.top_db,
    )  # fmt: skip
    ours = FeatureExtractor(Frontend.build(params))(y, sr=params.sr)
    assert ours.features.shape == expected.shape == (params.n_mels, params.n_frames)
    assert np.abs(ours.features - expected).max() <= 0.05


@pytest.mark.parametrize("params", [SEED, with_params(SEED, top_db=None)])
def test_digital_silence_is_stored_at_the_floor_not_at_0_db(params):
    clip = FeatureExtractor(Frontend.build(params))(np.zeros(22050, np.float32), sr=22050)
    floor = -80.0 if params.top_db else -100.0
    assert np.all(clip.features == floor)
    assert clip.peak_db == pytest.approx(-100.0)


def test_short_clip_is_padded_and_reports_its_valid_length():
    y = tone(22050, 0.05)[:, 0]  # 1102 samples, fewer than n_fft
    clip = FeatureExtractor(Frontend.build(SEED))(y, sr=22050)
    assert clip.features.shape == (128, 130)
    assert clip.n_samples_valid == 1102
    assert clip.n_frames_valid == 1 + 1102 // 512
    # the padded tail is at the floor, 80 dB below the clip's peak
    assert clip.features[:, 10:].max() == pytest.approx(-80.0)


def test_variable_length_keeps_each_clip_length():
    params = with_params(SEED, duration=None)
    extractor = FeatureExtractor(Frontend.build(params))
    for seconds in (0.3, 4.2):
        clip = extractor(tone(22050, seconds)[:, 0], sr=22050)
        n = round(22050 * seconds)
        assert clip.features.shape == (128, 1 + n // 512)
        assert clip.n_frames_valid == clip.features.shape[1]


def test_peak_db_is_the_clip_peak_before_ref_normalisation():
    y = tone(22050, 1.0)[:, 0]
    quiet = FeatureExtractor(Frontend.build(SEED))(y * 0.1, sr=22050)
    loud = FeatureExtractor(Frontend.build(SEED))(y, sr=22050)
    assert loud.peak_db - quiet.peak_db == pytest.approx(20.0, abs=0.01)
    np.testing.assert_allclose(loud.features, quiet.features, atol=0.01)


@pytest.mark.parametrize(("width", "n_frames"), [(3, 40), (9, 216), (9, 9), (5, 6)])
def test_delta_equals_librosa_delta(width, n_frames):
    x = np.random.default_rng(width).normal(-40, 15, (2, 7, n_frames)).astype(np.float32)
    expected = librosa.feature.delta(x, width=width, order=1, axis=-1, mode="interp")
    ours = delta(x, width=width)
    assert ours.dtype == np.float32 and ours.shape == x.shape
    np.testing.assert_allclose(ours, expected, atol=1e-4)


def test_deltas_add_a_channel_and_keep_the_valid_length():
    params = with_params(SEED, deltas=True)
    clip = FeatureExtractor(Frontend.build(params))(tone(22050, 1.0)[:, 0], sr=22050)
    assert clip.features.shape == (2, 128, 130)
    assert clip.n_frames_valid == 1 + 22050 // 512
    plain = FeatureExtractor(Frontend.build(SEED))(tone(22050, 1.0)[:, 0], sr=22050)
    np.testing.assert_array_equal(clip.features[0], plain.features)
