"""Built-in feature sets and the resolution of user-defined ones.

A user feature set may start from a preset (``preset: seed``) and override any
parameter. After resolution every parameter is explicit, so the stored
``params`` attribute fully describes the features.
"""

from __future__ import annotations

from melstore.errors import ConfigError
from melstore.features.extractor import FeatureParams
from melstore.features.kinds import FeatureKind, feature_kind

# librosa's melspectrogram and power_to_db, with every default of librosa 0.11
# spelled out (defaults drift between versions), on 3 s clips and no deltas.
_LIBROSA_DEFAULTS = {
    "kind": "logmel",
    "sr": 22050,
    "duration": 3.0,
    "res_type": "soxr_hq",
    "n_fft": 2048,
    "win_length": 2048,
    "hop_length": 512,
    "window": "hann",
    "center": True,
    "pad_mode": "constant",
    "n_mels": 128,
    "fmin": 0.0,
    "fmax": 11025.0,
    "htk": False,
    "norm": "slaney",
    "power": 2.0,
    "ref": 1.0,
    "amin": 1e-10,
    "top_db": 80.0,
    "deltas": False,
    "delta_width": 9,  # librosa.feature.delta's default
}

# The README ("Paper presets") gives each paper preset's source and deviations.
PRESETS: dict[str, dict] = {
    # The seed recipe: librosa.load(sr=22050, duration=3) -> melspectrogram
    # -> power_to_db(ref=np.max), with the clip zero-padded to 3 s.
    "seed": {**_LIBROSA_DEFAULTS, "ref": "max"},
    # The seed's scipy recipe: scipy.signal.spectrogram(fs=16000, window='hann',
    # nperseg=320, noverlap=160) -> log(spec + 1e-10), on 3 s zero-padded clips.
    "logspec": {
        **_LIBROSA_DEFAULTS,
        "kind": "logspec",
        "sr": 16000,
        "n_fft": 320,
        "win_length": 320,
        "hop_length": 160,
        "center": False,
        "n_mels": None,
        "fmin": None,
        "fmax": None,
        "htk": None,
        "norm": None,
        "ref": None,
        "top_db": None,
    },
    # Piczak 2015: librosa's log-mel of 2015 (reflect padding, logamplitude with
    # ref_power=1.0, top_db=80) and its delta as a second channel; 5 s = ESC-50.
    "piczak2015": {
        **_LIBROSA_DEFAULTS,
        "duration": 5.0,
        "n_fft": 1024,
        "win_length": 1024,
        "pad_mode": "reflect",
        "n_mels": 60,
        "deltas": True,
    },
    # Salamon & Bello 2017: 23 ms windows without overlap at 44.1 kHz, 128 bands
    # over 0-22050 Hz, one 128 x 128 patch (2.972 s = 128 hops) per clip.
    "salamon2017": {
        **_LIBROSA_DEFAULTS,
        "sr": 44100,
        "duration": 2.972,
        "n_fft": 1024,
        "win_length": 1024,
        "hop_length": 1024,
        "fmax": 22050.0,
        "ref": "max",
    },
    # VGGish (Hershey et al. 2017, vggish_params.py): 25 ms windows every 10 ms
    # at 16 kHz in a 512-point FFT, 64 HTK bands 125-7500 Hz, ln(mel + 0.01).
    "vggish": {
        **_LIBROSA_DEFAULTS,
        "kind": "vggish",
        "sr": 16000,
        "duration": 5.0,
        "n_fft": 512,
        "win_length": 400,
        "hop_length": 160,
        "center": False,
        "n_mels": 64,
        "fmin": 125.0,
        "fmax": 7500.0,
        "htk": True,
        "norm": None,
        "power": 1.0,
        "ref": None,
        "amin": 0.01,
        "top_db": None,
    },
    # PANNs (Kong et al. 2020, torchlibrosa front end): 32 kHz, 1024 / 320,
    # 64 bands 50-14000 Hz, reflect padding, power_to_db(ref=1.0, top_db=None).
    # PANNs resampled with resampy kaiser_best (librosa 0.6.3), not soxr: upsampled
    # clips differ by up to 35 dB in the 7-13 kHz bands (docs/configuration.md).
    "panns": {
        **_LIBROSA_DEFAULTS,
        "sr": 32000,
        "duration": 5.0,
        "n_fft": 1024,
        "win_length": 1024,
        "hop_length": 320,
        "pad_mode": "reflect",
        "n_mels": 64,
        "fmin": 50.0,
        "fmax": 14000.0,
        "top_db": None,
    },
}


def resolve_feature_set(name: str, feature_sets: dict[str, dict]) -> FeatureParams:
    """Turn a feature set name into its complete, checked parameters.

    Parameters
    ----------
    name : str
        A key of ``feature_sets`` or the name of a built-in preset.
    feature_sets : dict
        The ``feature_sets`` section of the configuration.

    Raises
    ------
    ConfigError
        If the name is unknown, the preset is unknown, the parameters
        contradict each other, or any entry of ``feature_sets``, resolved
        here or not, has the name of a built-in preset (the message names the key).
    """
    check_feature_set_names(feature_sets)
    if name in feature_sets:
        overrides = dict(feature_sets[name])
        where = f"feature_sets.{name}"
        preset = overrides.pop("preset", None)
        if preset is None:
            values = overrides
        elif preset in PRESETS:
            values = {**PRESETS[preset], **overrides}
        else:
            raise ConfigError(
                f"config key '{where}.preset': unknown preset {preset!r}; "
                f"choose one of: {', '.join(sorted(PRESETS))}"
            )
    elif name in PRESETS:
        values, where = dict(PRESETS[name]), f"features: {name}"
    else:
        known = sorted(set(PRESETS) | set(feature_sets))
        raise ConfigError(
            f"config key 'features': unknown feature set {name!r}; "
            f"define it under feature_sets or choose one of: {', '.join(known)}"
        )
    missing = sorted(set(PRESETS["seed"]) - set(values))
    if missing:
        raise ConfigError(
            f"config key '{where}': missing {', '.join(missing)} (or start from a preset)"
        )
    kind = feature_kind(values["kind"], key=f"{where}.kind")
    return _checked(FeatureParams.from_dict(_explicit(values, kind=kind)), kind=kind, where=where)


def check_feature_set_names(feature_sets: dict[str, dict]) -> None:
    """Refuse a ``feature_sets`` entry named after a built-in preset, which it would hide.

    Raises
    ------
    ConfigError
        Naming the first such entry.
    """
    for name in feature_sets:
        if name in PRESETS:
            raise ConfigError(
                f"config key 'feature_sets.{name}': {name!r} is the name of a built-in preset; "
                f"give your feature set another name (for example {name}_custom)"
            )


def _explicit(values: dict, *, kind: FeatureKind) -> dict:
    """Replace librosa's implicit ``fmax=None`` (meaning sr/2) by its value."""
    if kind.mel_bands and values.get("fmax") is None:
        values = {**values, "fmax": values["sr"] / 2}
    return values


def _checked(p: FeatureParams, *, kind: FeatureKind, where: str) -> FeatureParams:
    def fail(key: str, message: str) -> ConfigError:
        return ConfigError(f"config key '{where}.{key}': {message}")

    for key in kind.unused_params:
        if getattr(p, key) is not None:
            raise fail(key, f"must be null for kind {p.kind!r}")
    for key in kind.required_params:
        if getattr(p, key) is None:
            raise fail(key, f"is required for kind {p.kind!r}")
    if p.win_length > p.n_fft:
        raise fail("win_length", f"{p.win_length} exceeds n_fft={p.n_fft}")
    problem = kind.problem(p)
    if problem is not None:
        raise fail(*problem)
    if kind.mel_bands:
        if p.fmax > p.sr / 2:
            raise fail("fmax", f"{p.fmax} exceeds the Nyquist frequency sr/2 = {p.sr / 2}")
        if p.fmin >= p.fmax:
            raise fail("fmin", f"{p.fmin} must be below fmax={p.fmax}")
    if p.delta_width % 2 == 0:
        raise fail("delta_width", f"{p.delta_width} must be odd")
    if p.deltas and p.duration is None:
        raise fail(
            "deltas",
            "needs a fixed duration: the concatenated layout of duration null has no channel axis",
        )
    if p.deltas and p.delta_width > p.n_frames:
        raise fail("delta_width", f"{p.delta_width} exceeds the {p.n_frames} frames of a clip")
    return p
