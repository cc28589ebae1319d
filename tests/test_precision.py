"""Each precision claim of README.md and docs/configuration.md, at the figure it states.

The audio is generated here at each feature set's own rate, so that melstore and
the reference are given the same samples and the claims measure the DSP, not the
resampler. The references are written here from the documents' words: scipy's
``spectrogram``, librosa's float64 ``melspectrogram`` and ``power_to_db``, and
VGGish's ``mel_features.py`` transcribed in numpy.
"""

import librosa
import numpy as np
import pytest
import scipy.signal
import yaml
from conftest import REPO, every_feature_set

from melstore.features.extractor import FeatureExtractor, FeatureParams, Frontend
from melstore.features.presets import resolve_feature_set
from melstore.store.format import Storage

# The figures as README.md and docs/configuration.md state them.
DB_NEAR_PEAK = 0.001  # dB, for values less than 60 dB below the clip's peak
DB_TO_80_BELOW = 0.005  # dB, for values 60 to 80 dB below the clip's peak
DB_AT_FLOOR = 1.0  # dB, anywhere, down to the -100 dB floor of top_db: null
DB_ABOVE_FMAX = 0.01  # dB, less than 60 dB below the peak of a full-scale tone above the bands
VGGISH_LN = 2e-3  # ln units, every generated clip
VGGISH_LN_NOISE = 1e-5  # ln units, the noise clips
HTK_TRIANGLES_LN = 0.015  # ln units between librosa's htk=True and VGGish's mel matrix

LEVELS = {"full scale": 1.0, "-20 dBFS": 0.1, "-60 dBFS": 0.001}


def generated(sr: int, n: int) -> dict[str, np.ndarray]:
    """Tones, chirps and noise, whole or followed by silence, at each level.

    Returns
    -------
    dict of str to np.ndarray
        float32 (n,) signals by name, each peaking at its level.
    """
    rng = np.random.default_rng(7)
    t = np.arange(n) / sr
    first_half = t < t[-1] / 2
    shapes = {
        "tone": np.sin(2 * np.pi * 440 * t),
        "3.6 kHz tone": np.sin(2 * np.pi * 3587.3 * t),
        "high tone": np.sin(2 * np.pi * 0.3 * sr * t),
        "two tones": np.sin(2 * np.pi * 1000 * t) + 0.5 * np.sin(2 * np.pi * 3100 * t),
        "chirp": scipy.signal.chirp(t, 50, t[-1], 0.95 * sr / 2),
        "noise": rng.standard_normal(n),
        "noise then silence": first_half * rng.standard_normal(n),
        "tone then silence": first_half * np.sin(2 * np.pi * 440 * t),
    }
    return {
        f"{name} at {level}": (gain / np.abs(y).max() * y).astype(np.float32)
        for name, y in shapes.items()
        for level, gain in LEVELS.items()
    }


def preset(name: str, **changes) -> FeatureParams:
    """A built-in preset or a committed config.yaml set, resolved, with ``changes`` applied."""
    committed = yaml.safe_load((REPO / "config.yaml").read_text())["feature_sets"]
    params = resolve_feature_set(name, committed)
    return FeatureParams.from_dict({**params.to_dict(), **changes})


def compute(params: FeatureParams, y: np.ndarray) -> np.ndarray:
    """melstore's features of ``y``, given at the feature rate ``params.sr``."""
    return FeatureExtractor(Frontend.build(params))(y, sr=params.sr).features


# --- logspec: "equals its scipy recipe bit for bit" ---------------------------------------


@pytest.mark.parametrize("seconds", [3.0, 1.2])  # whole, and zero-padded to 3 s
def test_logspec_equals_its_scipy_recipe_bit_for_bit(seconds):
    params = preset("logspec")
    for label, clip in generated(16000, round(seconds * 16000)).items():
        y = np.pad(clip, (0, 3 * 16000 - len(clip)))
        # the README's recipe on the float32 waveform; numpy keeps it float32 throughout
        _, _, spec = scipy.signal.spectrogram(y, fs=16000, window="hann", nperseg=320, noverlap=160)
        expected = np.log(spec + 1e-10)
        assert expected.dtype == np.float32
        np.testing.assert_array_equal(compute(params, clip), expected, err_msg=label)


# --- logmel: melstore's float32 STFT against librosa's float64 one --------------------------


def librosa_float64(y: np.ndarray, p: FeatureParams) -> np.ndarray:
    """``melspectrogram`` of the float64 signal, then ``power_to_db``, as librosa computes it."""
    mel = librosa.feature.melspectrogram(
        y=y.astype(np.float64), sr=p.sr, n_fft=p.n_fft, hop_length=p.hop_length,
        win_length=p.win_length, window=p.window, center=p.center, pad_mode=p.pad_mode,
        power=p.power, n_mels=p.n_mels, fmin=p.fmin, fmax=p.fmax, htk=p.htk, norm=p.norm,
    )  # fmt: skip
    ref = np.max if p.ref == "max" else p.ref
    return librosa.power_to_db(mel, ref=ref, amin=p.amin, top_db=p.top_db)


LOGMEL_SETS = [name for name in every_feature_set() if preset(name).kind == "logmel"]


def test_every_logmel_preset_is_measured():
    assert {"seed", "piczak2015", "salamon2017", "panns"} <= set(LOGMEL_SETS)


@pytest.mark.parametrize("name", LOGMEL_SETS)
def test_float32_stft_is_within_the_stated_db_of_librosa_float64(name):
    params = preset(name, deltas=False)  # the claims are about the log-mel; deltas derive from it
    extractor = FeatureExtractor(Frontend.build(params))
    worst = {DB_NEAR_PEAK: (0.0, ""), DB_TO_80_BELOW: (0.0, ""), DB_AT_FLOOR: (0.0, "")}
    for label, y in generated(params.sr, params.n_samples).items():
        expected = librosa_float64(y, params)
        error = np.abs(extractor(y, sr=params.sr).features - expected)
        below_peak = expected.max() - expected
        for bound, where in [
            (DB_NEAR_PEAK, below_peak < 60),
            (DB_TO_80_BELOW, below_peak <= 80),
            (DB_AT_FLOOR, below_peak >= 0),
        ]:
            worst[bound] = max(worst[bound], (float(error[where].max()), label))
    for bound, (error, label) in worst.items():
        assert error <= bound, f"{name}: {error:.4f} dB on the {label} (stated {bound} dB)"


@pytest.mark.parametrize("hz", [15500.0, 15900.0])
def test_a_tone_above_the_mel_bands_differs_by_more_near_its_peak(hz):
    params = preset("panns")  # fmax 14 kHz at 32 kHz: the tone's power lies outside every band
    y = np.sin(2 * np.pi * hz * np.arange(params.n_samples) / params.sr).astype(np.float32)
    expected = librosa_float64(y, params)
    near_peak = np.abs(compute(params, y) - expected)[expected.max() - expected < 60]
    assert DB_NEAR_PEAK < near_peak.max() <= DB_ABOVE_FMAX  # the exception is real, and bounded


# --- vggish: VGGish's mel_features.py -------------------------------------------------------


def vggish_mel_matrix(n_bins=257, sr=16000, n_mels=64, low=125.0, high=7500.0):
    """``mel_features.spectrogram_to_mel_matrix``: (n_bins, n_mels), triangles linear in mel."""

    def hertz_to_mel(hz):
        return 1127.0 * np.log(1.0 + hz / 700.0)

    bins_mel = hertz_to_mel(np.linspace(0.0, sr / 2.0, n_bins))
    edges = np.linspace(hertz_to_mel(low), hertz_to_mel(high), n_mels + 2)
    weights = np.empty((n_bins, n_mels))
    for band in range(n_mels):
        lower, centre, upper = edges[band : band + 3]
        rising = (bins_mel - lower) / (centre - lower)
        falling = (upper - bins_mel) / (upper - centre)
        weights[:, band] = np.maximum(0.0, np.minimum(rising, falling))
    weights[0, :] = 0.0
    return weights


def vggish_magnitude(y, window_length=400, hop_length=160, fft_length=512):
    """``mel_features.stft_magnitude``: whole frames only, periodic Hann, float64 rfft."""
    n_frames = 1 + (len(y) - window_length) // hop_length
    frames = np.stack([y[i * hop_length : i * hop_length + window_length] for i in range(n_frames)])
    periodic_hann = 0.5 - 0.5 * np.cos(2 * np.pi / window_length * np.arange(window_length))
    return np.abs(np.fft.rfft(frames * periodic_hann, fft_length))


def vggish_log_mel(y):
    """``mel_features.log_mel_spectrogram`` as ``vggish_input`` calls it, (bands, frames)."""
    return np.log(vggish_magnitude(y) @ vggish_mel_matrix() + 0.01).T


def test_vggish_is_within_the_stated_ln_units_of_mel_features():
    params = preset("vggish")
    worst, worst_noise = (0.0, ""), 0.0
    for label, y in generated(16000, params.n_samples).items():
        # mel_features multiplies by a float64 window: the same samples, upcast
        error = float(np.abs(compute(params, y) - vggish_log_mel(y.astype(np.float64))).max())
        worst = max(worst, (error, label))
        if label.startswith("noise"):
            worst_noise = max(worst_noise, error)
    assert worst[0] <= VGGISH_LN, f"{worst[0]:.2e} ln units on the {worst[1]}"
    assert worst_noise <= VGGISH_LN_NOISE


def test_librosa_htk_triangles_differ_from_vggish_by_the_stated_ln_units():
    librosa_htk = librosa.filters.mel(
        sr=16000, n_fft=512, n_mels=64, fmin=125.0, fmax=7500.0, htk=True, norm=None,
        dtype=np.float64,
    ).T  # fmt: skip
    worst = 0.0
    for y in generated(16000, 5 * 16000).values():
        magnitude = vggish_magnitude(y.astype(np.float64))
        vggish, linear_in_hz = magnitude @ vggish_mel_matrix(), magnitude @ librosa_htk
        difference = np.log(vggish + 0.01) - np.log(linear_in_hz + 0.01)
        worst = max(worst, float(np.abs(difference).max()))
    # large enough that melstore builds VGGish's own matrix, and no larger than stated
    assert 0.005 < worst <= HTK_TRIANGLES_LN


# --- compact stores: "within 0.05 dB (0.03 dB in practice)" ---------------------------------


@pytest.mark.parametrize("bound", [0.1, 0.05, 0.01])
def test_a_precision_db_store_is_off_by_half_its_power_of_two_step(bound):
    params = preset("seed")
    # the documented step: the largest power of two not above twice the bound
    half_step = 2.0 ** np.floor(np.log2(2 * bound)) / 2
    worst = 0.0
    for label, y in generated(params.sr, params.n_samples).items():
        exact = compute(params, y)
        stored, _ = Storage(precision_db=bound).quantise(exact, name=label)
        worst = max(worst, float(np.abs(stored.astype(np.float64) - exact).max()))
    assert worst <= half_step <= bound
    assert worst > 0.9 * half_step  # in practice the error reaches the half step
