"""Feature parameters and the spectrogram front end.

Each ``kind`` of features reproduces one reference implementation; its class in
:mod:`melstore.features.kinds` holds every rule that depends on the kind, and the code
here asks it.

Features are float32 arrays of shape (n_bins, n_frames): mel bands or FFT bins
by frames. With ``deltas`` they are (2, n_bins, n_frames): the features, then
their ``librosa.feature.delta`` (:func:`delta`).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields, replace

import numpy as np

from melstore.errors import ConfigError
from melstore.features.audio import fix_length, resample
from melstore.features.kinds import feature_kind

PEAK_FLOOR_DB = -100.0  # a clip's peak_db when it holds no power: 10 log10(1e-10)


@dataclass(frozen=True)
class FeatureParams:
    """Every parameter of a feature set, all explicit (librosa defaults drift)."""

    kind: str
    sr: int
    duration: float | None
    res_type: str
    n_fft: int
    win_length: int
    hop_length: int
    window: str
    center: bool
    pad_mode: str
    n_mels: int | None
    fmin: float | None
    fmax: float | None
    htk: bool | None
    norm: str | None
    power: float
    ref: str | float | None
    amin: float
    top_db: float | None
    deltas: bool
    delta_width: int

    @classmethod
    def from_dict(cls, values: dict) -> FeatureParams:
        """Build from a mapping holding exactly the field names."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - names)
        missing = sorted(names - set(values))
        if unknown or missing:
            raise ConfigError(f"feature parameters: unknown {unknown}, missing {missing}")
        return cls(**values)

    def to_dict(self) -> dict:
        """The parameters as builtin literals (Snakemake compares params by repr)."""
        return asdict(self)

    def to_json(self) -> str:
        """Canonical JSON, as stored in the store's attributes."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @property
    def n_samples(self) -> int | None:
        """Samples per clip after trimming or padding; None for variable length."""
        return None if self.duration is None else round(self.duration * self.sr)

    @property
    def n_bins(self) -> int:
        """Rows of a feature matrix: mel bands or FFT bins, as the kind says."""
        return feature_kind(self.kind).n_bins(self)

    @property
    def channels(self) -> tuple[str, ...] | None:
        """Names along the channel axis of a clip's features; None when there is none."""
        return (self.kind, "delta") if self.deltas else None

    @property
    def frame_length(self) -> int:
        """Samples per analysis frame: ``n_fft`` or ``win_length``, as the kind says."""
        return feature_kind(self.kind).frame_length(self)

    def frames_for(self, n_samples: int) -> int:
        """Frames this feature set produces for a signal of ``n_samples``."""
        if feature_kind(self.kind).centred(self):
            return 1 + n_samples // self.hop_length
        return 1 + (max(n_samples, self.frame_length) - self.frame_length) // self.hop_length

    @property
    def frame_shape(self) -> tuple[int, ...]:
        """Shape of one frame of features: (n_bins,), or (channels, n_bins) with deltas."""
        return (*((len(self.channels),) if self.channels else ()), self.n_bins)

    @property
    def clip_shape(self) -> tuple[int, ...] | None:
        """Shape of one clip's features; None for variable length."""
        if self.n_frames is None:
            return None
        return (*self.frame_shape, self.n_frames)

    @property
    def n_frames(self) -> int | None:
        """Frames per clip for fixed-length sets; None for variable length."""
        return None if self.n_samples is None else self.frames_for(self.n_samples)

    def frame_times(self, n_frames: int) -> np.ndarray:
        """Time in seconds of the centre of each frame."""
        offset = 0 if feature_kind(self.kind).centred(self) else self.frame_length // 2
        return (np.arange(n_frames) * self.hop_length + offset) / self.sr


@dataclass(frozen=True)
class ClipFeatures:
    """The features of one clip and what is needed to interpret them."""

    features: np.ndarray
    n_samples_valid: int
    n_frames_valid: int
    peak_db: float


@dataclass(frozen=True)
class Frontend:
    """The per-feature-set constants: window, filter bank and frequency axis.

    Build it with librosa (:meth:`build`) once per extraction job, before
    forking its workers.
    """

    params: FeatureParams
    window: np.ndarray
    filterbank: np.ndarray | None
    frequencies: np.ndarray

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays, by name, to keep beside the features (:meth:`from_arrays`)."""
        arrays = {"window": self.window, "frequencies": self.frequencies}
        if self.filterbank is not None:
            arrays["filterbank"] = self.filterbank
        return arrays

    @classmethod
    def from_arrays(cls, params: FeatureParams, arrays: dict[str, np.ndarray]) -> Frontend:
        """The front end kept by :meth:`arrays`, for the same ``params``."""
        return cls(params, arrays["window"], arrays.get("filterbank"), arrays["frequencies"])

    @classmethod
    def build(cls, params: FeatureParams) -> Frontend:
        """Compute the window and filter bank with librosa, as the kind says."""
        return cls(params, *feature_kind(params.kind).front_end(params))


class FeatureExtractor:
    """Turn decoded mono audio into the features of one feature set.

    Parameters
    ----------
    frontend : Frontend
        Window and filter bank for the feature set.
    """

    def __init__(self, frontend: Frontend):
        # scipy here, not at the top: the store's readers never load it
        import scipy.fft
        import scipy.sparse

        self.frontend = frontend
        self.params = frontend.params
        self.kind = feature_kind(self.params.kind)
        # a kind centres only when center is true; its other framing rules do not depend on it
        self._uncentred = replace(self.params, center=False)
        self._window = frontend.window.astype(np.float32)
        # each mel band covers a few FFT bins: 2% of the matrix is non-zero
        self._filterbank = (
            None if frontend.filterbank is None else scipy.sparse.csr_array(frontend.filterbank)
        )

    def __call__(self, y: np.ndarray, *, sr: int) -> ClipFeatures:
        """Resample, trim or pad, and compute the features of one clip.

        Parameters
        ----------
        y : np.ndarray
            Mono float32 audio at its native rate.
        sr : int
            Native sample rate of ``y``.
        """
        y, n_valid = self.prepare(y, sr=sr)
        return self.finish(self.power_spectrogram(y), n_samples_valid=n_valid)

    def finish(self, power: np.ndarray, *, n_samples_valid: int) -> ClipFeatures:
        """Log-scale a clip's whole :meth:`power_spectrogram` and add its deltas.

        Parameters
        ----------
        power : np.ndarray
            The spectrogram of the whole prepared signal (:meth:`prepare`).
        n_samples_valid : int
            How many samples of that signal came from the clip.
        """
        p = self.params
        peak = float(power.max())
        features = self.to_log(power, peak=peak)
        if p.deltas:
            features = np.stack([features, delta(features, width=p.delta_width)])
        n_frames_valid = min(p.frames_for(n_samples_valid), features.shape[-1])
        return ClipFeatures(
            features, n_samples_valid, n_frames_valid, _decibels(peak, power=p.power)
        )

    def prepare(self, y: np.ndarray, *, sr: int) -> tuple[np.ndarray, int]:
        """Resample to the feature rate and trim or pad to the duration.

        Returns
        -------
        (np.ndarray, int)
            The signal, and how many of its samples came from the clip.
        """
        p = self.params
        y = resample(y, orig_sr=sr, target_sr=p.sr, res_type=p.res_type)
        n_valid = len(y)
        if p.n_samples is not None:
            y = fix_length(y, p.n_samples)
        return y, n_valid

    def power_spectrogram(self, y: np.ndarray, *, padded: bool = False) -> np.ndarray:
        """The kind's linear spectrogram, float32 (n_bins, n_frames).

        Parameters
        ----------
        y : np.ndarray
            The prepared signal (:meth:`prepare`), or a piece of it.
        padded : bool
            Whether ``y`` is already padded as centring pads it: its frames
            then start at its first sample, for centred sets too.
        """
        return self.kind.power_spectrogram(
            y,
            params=self._uncentred if padded else self.params,
            window=self._window,
            filterbank=self._filterbank,
        )

    def to_log(self, power: np.ndarray, *, peak: float) -> np.ndarray:
        """Log-scale a power spectrogram as the kind says."""
        return self.kind.log(power, params=self.params, peak=peak)


def _decibels(value: float, *, power: float) -> float:
    """dB of a spectrogram value (``|X| ** power``), floored at -100 dB like silence.

    Independent of ``amin``, which is a log offset for ``vggish`` (0.01).
    """
    if value <= 0:
        return PEAK_FLOOR_DB
    return max(PEAK_FLOOR_DB, 20.0 / power * math.log10(value))


def delta(features: np.ndarray, *, width: int) -> np.ndarray:
    """``librosa.feature.delta(features, width=width, order=1, axis=-1, mode='interp')``.

    That is the Savitzky-Golay call librosa makes, made directly: importing
    ``librosa.feature`` would add about 110 MB to every worker process.

    Parameters
    ----------
    features : np.ndarray
        (..., n_frames), with ``n_frames >= width``.
    width : int
        Odd number of frames, at least 3.
    """
    from scipy.signal import savgol_filter  # only sets with deltas load it

    slope = savgol_filter(features, width, polyorder=1, deriv=1, axis=-1, mode="interp")
    return slope.astype(np.float32)
