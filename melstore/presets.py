"""Built-in feature sets and the resolution of user-defined ones.

A user feature set may start from a preset (``preset: seed``) and override any
parameter. After resolution every parameter is explicit, so the stored
``params`` attribute fully describes the features.
"""

from __future__ import annotations

from melstore.errors import ConfigError
from melstore.features import FeatureParams

PRESETS: dict[str, dict] = {
    # The seed recipe: librosa.load(sr=22050, duration=3) -> melspectrogram
    # -> power_to_db(ref=np.max), with the clip zero-padded to 3 s.
    "seed": {
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
        "ref": "max",
        "amin": 1e-10,
        "top_db": 80.0,
    },
    # The seed's scipy recipe: scipy.signal.spectrogram(fs=16000, window='hann',
    # nperseg=320, noverlap=160) -> log(spec + 1e-10), on 3 s zero-padded clips.
    "logspec": {
        "kind": "logspec",
        "sr": 16000,
        "duration": 3.0,
        "res_type": "soxr_hq",
        "n_fft": 320,
        "win_length": 320,
        "hop_length": 160,
        "window": "hann",
        "center": False,
        "pad_mode": "constant",
        "n_mels": None,
        "fmin": None,
        "fmax": None,
        "htk": None,
        "norm": None,
        "power": 2.0,
        "ref": None,
        "amin": 1e-10,
        "top_db": None,
    },
}

# Parameters with no meaning for a kind; they must stay null there.
_UNUSED_BY_KIND = {
    "logspec": ("n_mels", "fmin", "fmax", "htk", "norm", "ref", "top_db"),
    "logmel": (),
}
_REQUIRED_BY_KIND = {
    "logmel": ("n_mels", "fmin", "htk", "ref"),
    "logspec": (),
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
        If the name is unknown, the preset is unknown, or the parameters
        contradict each other (the message names the key).
    """
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
    return _checked(FeatureParams.from_dict(_explicit(values)), where)


def _explicit(values: dict) -> dict:
    """Replace librosa's implicit ``fmax=None`` (meaning sr/2) by its value."""
    if values["kind"] == "logmel" and values.get("fmax") is None:
        values = {**values, "fmax": values["sr"] / 2}
    return values


def _checked(p: FeatureParams, where: str) -> FeatureParams:
    def fail(key: str, message: str) -> ConfigError:
        return ConfigError(f"config key '{where}.{key}': {message}")

    for key in _UNUSED_BY_KIND[p.kind]:
        if getattr(p, key) is not None:
            raise fail(key, f"must be null for kind {p.kind!r}")
    for key in _REQUIRED_BY_KIND[p.kind]:
        if getattr(p, key) is None:
            raise fail(key, f"is required for kind {p.kind!r}")
    if p.win_length > p.n_fft:
        raise fail("win_length", f"{p.win_length} exceeds n_fft={p.n_fft}")
    if p.kind == "logspec" and p.hop_length > p.n_fft:
        raise fail(
            "hop_length", f"{p.hop_length} exceeds n_fft={p.n_fft} (frames would skip audio)"
        )
    if p.kind == "logspec" and (p.power != 2.0 or p.center or p.win_length != p.n_fft):
        raise fail(
            "kind",
            "logspec follows scipy.signal.spectrogram: power 2, center false, "
            "win_length equal to n_fft",
        )
    if p.kind == "logmel":
        if p.fmax > p.sr / 2:
            raise fail("fmax", f"{p.fmax} exceeds the Nyquist frequency sr/2 = {p.sr / 2}")
        if p.fmin >= p.fmax:
            raise fail("fmin", f"{p.fmin} must be below fmax={p.fmax}")
    return p
