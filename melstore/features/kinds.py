"""Feature kinds: one registered class per kind, holding every rule that depends on it.

A feature set's ``kind`` names the reference implementation its features
reproduce. Each kind is a :class:`FeatureKind` subclass registered under its
name by :func:`register_kind`; the rest of melstore gets the kind's object from
:func:`feature_kind` and asks it, and never compares the name itself:

:class:`LogMel`
    librosa's ``melspectrogram`` followed by ``power_to_db``.
:class:`LogSpec`
    ``scipy.signal.spectrogram`` followed by ``log(spec + amin)``.
:class:`VGGish`
    VGGish's ``mel_features.log_mel_spectrogram``.

Each kind also computes its features in PyTorch, for a batch of waveforms
(:meth:`FeatureKind.torch_power_spectrogram`, :meth:`FeatureKind.torch_log`),
which :class:`melstore.torch.FrontEnd` runs. The methods that need librosa,
scipy or torch import them, so that the store's readers, which import this
module, never load them.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from melstore.errors import ConfigError
from melstore.features.audio import fix_length

if TYPE_CHECKING:
    import torch
    from scipy.sparse import csr_array

    from melstore.features.extractor import FeatureParams

FEATURE_KINDS: dict[str, FeatureKind] = {}


def register_kind(cls: type[FeatureKind]) -> type[FeatureKind]:
    """Class decorator: make ``cls`` the kind named ``cls.name``.

    Raises
    ------
    ValueError
        If another class holds that name already.
    """
    if cls.name in FEATURE_KINDS:
        raise ValueError(f"feature kind {cls.name!r} is registered twice")
    FEATURE_KINDS[cls.name] = cls()
    return cls


def feature_kind(name: str, *, key: str = "kind") -> FeatureKind:
    """The registered kind called ``name``.

    Parameters
    ----------
    name : str
        A feature set's ``kind``.
    key : str
        The configuration key that gave ``name``, for the error message.

    Raises
    ------
    ConfigError
        If no kind has that name; the message names the key and the choices.
    """
    try:
        return FEATURE_KINDS[name]
    except KeyError:
        raise ConfigError(
            f"config key '{key}': unknown feature kind {name!r}; "
            f"choose one of: {', '.join(sorted(FEATURE_KINDS))}"
        ) from None


class FeatureKind(ABC):
    """What one kind of features is: its front end, log, frame rule, checks and labels.

    Methods take the feature set's parameters: a
    :class:`~melstore.features.extractor.FeatureParams` to compute, or the mapping a
    store keeps (``Store.params``) to label a figure.

    Attributes
    ----------
    name : str
        The ``kind`` that selects the class.
    mel_bands : bool
        Whether the rows are mel bands (else FFT bins).
    decibels : bool
        Whether the values are dB, with ``ref`` and ``top_db`` (else natural logs).
    log_name : str
        The log the kind takes, as a figure's title names it.
    unused_params : tuple of str
        Parameters with no meaning for the kind; they must stay null.
    required_params : tuple of str
        Parameters the kind cannot do without; they must not be null.
    """

    name: ClassVar[str]
    mel_bands: ClassVar[bool]
    decibels: ClassVar[bool]
    log_name: ClassVar[str]
    unused_params: ClassVar[tuple[str, ...]]
    required_params: ClassVar[tuple[str, ...]]

    @abstractmethod
    def n_bins(self, params: FeatureParams) -> int:
        """Rows of a feature matrix."""

    @abstractmethod
    def frame_length(self, params: FeatureParams) -> int:
        """Samples per analysis frame."""

    @abstractmethod
    def centred(self, params: FeatureParams) -> bool:
        """Whether frame ``t`` is centred on sample ``t * hop_length`` (else starts there)."""

    @abstractmethod
    def front_end(self, params: FeatureParams) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """Compute the constants of a feature set with librosa.

        Returns
        -------
        window : np.ndarray
            The analysis window.
        filterbank : np.ndarray or None
            float32 (n_bins, 1 + n_fft // 2), or None when the rows are FFT bins.
        frequencies : np.ndarray
            Hz of each row: band centres or FFT bin frequencies.
        """

    @abstractmethod
    def power_spectrogram(
        self,
        y: np.ndarray,
        *,
        params: FeatureParams,
        window: np.ndarray,
        filterbank: csr_array | None,
    ) -> np.ndarray:
        """The linear spectrogram whose log is stored.

        Parameters
        ----------
        y : np.ndarray
            Mono float32 audio at ``params.sr``, trimmed or padded.
        params : FeatureParams
        window : np.ndarray
            float32 window of the :meth:`front_end`.
        filterbank : scipy.sparse.csr_array or None
            The :meth:`front_end`'s filter bank.

        Returns
        -------
        np.ndarray
            float32 (n_bins, n_frames).
        """

    @abstractmethod
    def log(self, power: np.ndarray, *, params: FeatureParams, peak: float) -> np.ndarray:
        """Log-scale a :meth:`power_spectrogram` whose largest value is ``peak``."""

    @abstractmethod
    def torch_power_spectrogram(
        self,
        waveforms: torch.Tensor,
        *,
        params: FeatureParams,
        window: torch.Tensor,
        filterbank: torch.Tensor | None,
    ) -> torch.Tensor:
        """:meth:`power_spectrogram` of a batch, in PyTorch.

        Parameters
        ----------
        waveforms : torch.Tensor
            (batch, samples) at ``params.sr``, trimmed or padded.
        params : FeatureParams
        window : torch.Tensor
            The :meth:`front_end`'s window, in the dtype of ``waveforms``.
        filterbank : torch.Tensor or None
            The :meth:`front_end`'s filter bank, dense.

        Returns
        -------
        torch.Tensor
            (batch, n_bins, n_frames).
        """

    @abstractmethod
    def torch_log(self, power: torch.Tensor, *, params: FeatureParams) -> torch.Tensor:
        """:meth:`log` of a batch of :meth:`torch_power_spectrogram`, each item by its own peak."""

    @abstractmethod
    def problem(self, params: FeatureParams) -> tuple[str, str] | None:
        """The first parameter that contradicts the kind's reference, and why.

        The caller checks :attr:`unused_params` and :attr:`required_params`
        before, and the range of a mel filter bank after.

        Returns
        -------
        (str, str) or None
            The key at fault and a one-line message; None if all fit.
        """

    @abstractmethod
    def value_label(self, params: Mapping) -> str:
        """What the stored values are, with their unit (for colour bars)."""

    @abstractmethod
    def linear_label(self, params: Mapping) -> str:
        """What the linear spectrogram behind the stored values is."""


class _MelKind(FeatureKind):
    """A kind whose rows are mel bands: a framed STFT projected on its filter bank."""

    def power_spectrogram(
        self,
        y: np.ndarray,
        *,
        params: FeatureParams,
        window: np.ndarray,
        filterbank: csr_array | None,
    ) -> np.ndarray:
        return _mel_spectrogram(
            y,
            params=params,
            window=window,
            filterbank=filterbank,
            frame_length=self.frame_length(params),
            centred=self.centred(params),
        )

    def torch_power_spectrogram(
        self,
        waveforms: torch.Tensor,
        *,
        params: FeatureParams,
        window: torch.Tensor,
        filterbank: torch.Tensor | None,
    ) -> torch.Tensor:
        return _torch_mel_spectrogram(
            waveforms,
            params=params,
            window=window,
            filterbank=filterbank,
            frame_length=self.frame_length(params),
            centred=self.centred(params),
        )


@register_kind
class LogMel(_MelKind):
    """librosa's ``melspectrogram`` followed by ``power_to_db``.

    The STFT framing is librosa's (``center``, ``pad_mode``, periodic window
    padded to ``n_fft``), done in float32 with scipy's FFT: within 0.001 dB of
    librosa's float64 STFT less than 60 dB below the clip's peak, more further
    down (docs/configuration.md, "Presets"). The window and the mel filter bank
    come from librosa.
    """

    name = "logmel"
    mel_bands = True
    decibels = True
    log_name = "power_to_db"
    unused_params = ()
    required_params = ("n_mels", "fmin", "htk", "ref")

    def n_bins(self, params: FeatureParams) -> int:
        return params.n_mels

    def frame_length(self, params: FeatureParams) -> int:
        return params.n_fft

    def centred(self, params: FeatureParams) -> bool:
        return params.center

    def front_end(self, params: FeatureParams) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        import librosa

        filterbank = librosa.filters.mel(
            sr=params.sr,
            n_fft=params.n_fft,
            n_mels=params.n_mels,
            fmin=params.fmin,
            fmax=params.fmax,
            htk=params.htk,
            norm=params.norm,
            dtype=np.float32,
        )
        centres = librosa.mel_frequencies(
            n_mels=params.n_mels + 2, fmin=params.fmin, fmax=params.fmax, htk=params.htk
        )[1:-1]
        return _padded_window(params), filterbank, centres

    def log(self, power: np.ndarray, *, params: FeatureParams, peak: float) -> np.ndarray:
        """``librosa.power_to_db(power, ref=..., amin=..., top_db=...)``, in float32.

        Notes
        -----
        Digital silence (no power above ``amin``) with ``ref='max'`` would come
        out as 0 dB everywhere, identical to a peak. Such clips are stored at
        the floor instead: ``-top_db`` dB, or ``10*log10(amin)`` dB when
        ``top_db`` is None.
        """
        p = params
        if p.ref == "max":
            if peak <= p.amin:
                return np.full(power.shape, _silence_db(p), dtype=np.float32)
            ref = peak
        else:
            ref = abs(float(p.ref))
        # one array beside power, computed in place: a whole recording's features are large
        db = np.maximum(np.float32(p.amin), power)
        np.log10(db, out=db)
        db *= np.float32(10.0)
        db -= np.float32(10.0 * math.log10(max(p.amin, ref)))
        if p.top_db is not None:
            np.maximum(db, db.max() - np.float32(p.top_db), out=db)
        return db

    def torch_log(self, power: torch.Tensor, *, params: FeatureParams) -> torch.Tensor:
        """:meth:`log` of each item of a batch (batch, n_mels, n_frames), in PyTorch."""
        import torch

        p = params
        peak = power.amax(dim=(-2, -1), keepdim=True)
        db = 10.0 * torch.log10(power.clamp(min=p.amin))
        if p.ref == "max":
            db = db - 10.0 * torch.log10(peak.clamp(min=p.amin))
        else:
            db = db - 10.0 * math.log10(max(p.amin, abs(float(p.ref))))
        if p.top_db is not None:
            db = torch.maximum(db, db.amax(dim=(-2, -1), keepdim=True) - p.top_db)
        if p.ref == "max":
            db = torch.where(peak <= p.amin, _silence_db(p), db)
        return db

    def problem(self, params: FeatureParams) -> tuple[str, str] | None:
        return None

    def value_label(self, params: Mapping) -> str:
        if params["ref"] == "max":
            return "dB re the clip's peak"
        return f"dB re {float(params['ref']):g} (full-scale power)"

    def linear_label(self, params: Mapping) -> str:
        return _mel_values(params["power"])


@register_kind
class LogSpec(FeatureKind):
    """``scipy.signal.spectrogram`` followed by ``log(spec + amin)``: the seed's second recipe.

    PSD scaling, constant detrend, one-sided; the rows are FFT bins.
    """

    name = "logspec"
    mel_bands = False
    decibels = False
    log_name = "ln(PSD + amin)"
    unused_params = ("n_mels", "fmin", "fmax", "htk", "norm", "ref", "top_db")
    required_params = ()

    def n_bins(self, params: FeatureParams) -> int:
        return params.n_fft // 2 + 1

    def frame_length(self, params: FeatureParams) -> int:
        return params.n_fft

    def centred(self, params: FeatureParams) -> bool:
        return False  # scipy.signal.spectrogram neither centres nor pads

    def front_end(self, params: FeatureParams) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        frequencies = np.fft.rfftfreq(params.n_fft, 1 / params.sr)
        return _padded_window(params), None, frequencies

    def power_spectrogram(
        self,
        y: np.ndarray,
        *,
        params: FeatureParams,
        window: np.ndarray,
        filterbank: csr_array | None,
    ) -> np.ndarray:
        """scipy's PSD, which builds its own window from ``params.window``."""
        from scipy.signal import spectrogram

        p = params
        y = fix_length(y, max(len(y), p.n_fft))
        _, _, spec = spectrogram(
            y, fs=p.sr, window=p.window, nperseg=p.n_fft, noverlap=p.n_fft - p.hop_length
        )
        return spec.astype(np.float32)

    def torch_power_spectrogram(
        self,
        waveforms: torch.Tensor,
        *,
        params: FeatureParams,
        window: torch.Tensor,
        filterbank: torch.Tensor | None,
    ) -> torch.Tensor:
        """scipy's PSD in PyTorch: constant detrend, density scaling, one-sided."""
        import torch
        import torch.nn.functional as F

        p = params
        waveforms = F.pad(waveforms, (0, max(0, p.n_fft - waveforms.shape[-1])))
        frames = waveforms.unfold(-1, p.n_fft, p.hop_length)
        frames = frames - frames.mean(dim=-1, keepdim=True)
        spectrum = torch.fft.rfft(frames * window, dim=-1)
        density = (spectrum.real.square() + spectrum.imag.square()) / (p.sr * window.square().sum())
        # one-sided: a bin holds its negative frequency's power too, but DC and Nyquist have none
        last = density.shape[-1] - 1 if p.n_fft % 2 == 0 else density.shape[-1]
        one_sided = torch.cat(
            [density[..., :1], 2 * density[..., 1:last], density[..., last:]], dim=-1
        )
        return one_sided.mT

    def log(self, power: np.ndarray, *, params: FeatureParams, peak: float) -> np.ndarray:
        return _log_offset(power, amin=params.amin)

    def torch_log(self, power: torch.Tensor, *, params: FeatureParams) -> torch.Tensor:
        import torch

        return torch.log(power + params.amin)

    def problem(self, params: FeatureParams) -> tuple[str, str] | None:
        p = params
        if p.hop_length > p.n_fft:
            return "hop_length", f"{p.hop_length} exceeds n_fft={p.n_fft} (frames would skip audio)"
        if p.power != 2.0 or p.center or p.win_length != p.n_fft:
            return "kind", (
                "logspec follows scipy.signal.spectrogram: power 2, center false, "
                "win_length equal to n_fft"
            )
        return None

    def value_label(self, params: Mapping) -> str:
        return f"ln(PSD + {params['amin']:g})"

    def linear_label(self, params: Mapping) -> str:
        return "PSD"


@register_kind
class VGGish(_MelKind):
    """VGGish's ``mel_features.log_mel_spectrogram``.

    Frames of ``win_length`` samples every ``hop_length``, neither centred nor
    padded, a periodic window of ``win_length``, ``|rfft(frame, n_fft)| **
    power``, VGGish's HTK mel matrix (:func:`vggish_filterbank`), then
    ``log(mel + amin)``.
    """

    name = "vggish"
    mel_bands = True
    decibels = False
    log_name = "ln(mel + amin)"
    unused_params = ("norm", "ref", "top_db")
    required_params = ("n_mels", "fmin", "htk")

    def n_bins(self, params: FeatureParams) -> int:
        return params.n_mels

    def frame_length(self, params: FeatureParams) -> int:
        return params.win_length

    def centred(self, params: FeatureParams) -> bool:
        return False  # VGGish frames the signal from its first sample, unpadded

    def front_end(self, params: FeatureParams) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        filterbank, centres = vggish_filterbank(
            sr=params.sr,
            n_fft=params.n_fft,
            n_mels=params.n_mels,
            fmin=params.fmin,
            fmax=params.fmax,
        )
        # the window is not centred: rfft zero-pads frames at the end
        return _window(params), filterbank.astype(np.float32), centres

    def log(self, power: np.ndarray, *, params: FeatureParams, peak: float) -> np.ndarray:
        return _log_offset(power, amin=params.amin)

    def torch_log(self, power: torch.Tensor, *, params: FeatureParams) -> torch.Tensor:
        import torch

        return torch.log(power + params.amin)

    def problem(self, params: FeatureParams) -> tuple[str, str] | None:
        if not params.htk or params.center:
            return "kind", "vggish follows VGGish's mel_features: htk true, center false"
        return None

    def value_label(self, params: Mapping) -> str:
        return f"ln(mel + {params['amin']:g})"

    def linear_label(self, params: Mapping) -> str:
        return _mel_values(params["power"])


def _window(params: FeatureParams) -> np.ndarray:
    """The periodic window of ``win_length`` samples, as librosa's STFT makes it."""
    import librosa

    return librosa.filters.get_window(params.window, params.win_length, fftbins=True)


def _padded_window(params: FeatureParams) -> np.ndarray:
    """:func:`_window` zero-padded on both sides to ``n_fft`` samples."""
    window = _window(params)
    if len(window) == params.n_fft:  # nothing to pad: librosa.util's import sets up numba
        return window
    import librosa

    return librosa.util.pad_center(window, size=params.n_fft)


def _mel_spectrogram(
    y: np.ndarray,
    *,
    params: FeatureParams,
    window: np.ndarray,
    filterbank: csr_array,
    frame_length: int,
    centred: bool,
) -> np.ndarray:
    """Mel power or magnitude: framed ``|rfft| ** power`` through the filter bank.

    Parameters
    ----------
    y : np.ndarray
        Mono float32 audio.
    params : FeatureParams
    window : np.ndarray
        float32, ``frame_length`` samples.
    filterbank : scipy.sparse.csr_array
        (n_mels, 1 + n_fft // 2).
    frame_length : int
        Samples per frame.
    centred : bool
        Pad ``n_fft // 2`` samples on both sides (``pad_mode``), as librosa's
        ``center=True`` does; else frame from the first sample.
    """
    from scipy.fft import rfft  # already loaded by FeatureExtractor

    p = params
    if centred:
        y = np.pad(y, p.n_fft // 2, mode=p.pad_mode)
    else:
        y = fix_length(y, max(len(y), frame_length))
    frames = np.lib.stride_tricks.sliding_window_view(y, frame_length)[:: p.hop_length]
    # float32 throughout (librosa: float64): faster; < 0.001 dB off within 60 dB of the peak
    spectrum = rfft(frames * window, n=p.n_fft, axis=-1)
    power = np.square(spectrum.real) + np.square(spectrum.imag)
    magnitude = power if p.power == 2 else power ** np.float32(p.power / 2)
    return filterbank @ magnitude.T


def _torch_mel_spectrogram(
    waveforms: torch.Tensor,
    *,
    params: FeatureParams,
    window: torch.Tensor,
    filterbank: torch.Tensor,
    frame_length: int,
    centred: bool,
) -> torch.Tensor:
    """:func:`_mel_spectrogram` of a batch of waveforms (batch, samples), in PyTorch.

    Returns
    -------
    torch.Tensor
        (batch, n_mels, n_frames).
    """
    import torch
    import torch.nn.functional as F

    p = params
    if centred:
        waveforms = _torch_pad_both_sides(waveforms, size=p.n_fft // 2, mode=p.pad_mode)
    else:
        waveforms = F.pad(waveforms, (0, max(0, frame_length - waveforms.shape[-1])))
    frames = waveforms.unfold(-1, frame_length, p.hop_length)
    spectrum = torch.fft.rfft(frames * window, n=p.n_fft, dim=-1)
    power = spectrum.real.square() + spectrum.imag.square()
    magnitude = power if p.power == 2 else power.pow(p.power / 2)
    return filterbank @ magnitude.mT


def _torch_pad_both_sides(waveforms: torch.Tensor, *, size: int, mode: str) -> torch.Tensor:
    """Pad the last axis by ``size`` samples on both sides as ``np.pad(mode=mode)`` does."""
    import torch
    import torch.nn.functional as F

    if mode == "constant":
        return F.pad(waveforms, (size, size))
    # np.pad's own choice of source sample for each position: torch has no 'symmetric' mode,
    # and its 'reflect' refuses signals shorter than the padding
    source = np.pad(np.arange(waveforms.shape[-1]), size, mode=mode)
    return waveforms[..., torch.as_tensor(source, device=waveforms.device)]


def _silence_db(params: FeatureParams) -> float:
    """Every value of a digitally silent clip under ``ref: max``, in dB (:meth:`LogMel.log`)."""
    return -params.top_db if params.top_db is not None else 10.0 * math.log10(params.amin)


def _mel_values(power: float) -> str:
    """The filter bank's output, mel ``|X| ** power``, in words."""
    return {2: "mel power", 1: "mel magnitude"}.get(power, f"mel |X|^{power:g}")


def vggish_filterbank(
    *, sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float
) -> tuple[np.ndarray, np.ndarray]:
    """VGGish's mel matrix (``mel_features.spectrogram_to_mel_matrix``), transposed.

    HTK mel scale ``1127 ln(1 + f / 700)``, triangles linear in mel (librosa's
    are linear in Hz), no normalisation, and no weight on the DC bin.

    Returns
    -------
    filterbank : np.ndarray
        float64 (n_mels, 1 + n_fft // 2).
    centres : np.ndarray
        Each band's centre frequency in Hz.
    """

    def hz_to_mel(hz):
        return 1127.0 * np.log(1.0 + hz / 700.0)

    bins_mel = hz_to_mel(np.linspace(0.0, sr / 2, 1 + n_fft // 2))
    edges = np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2)
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins_mel - lower) / (centre - lower)
    falling = (upper - bins_mel) / (upper - centre)
    filterbank = np.maximum(0.0, np.minimum(rising, falling))
    filterbank[:, 0] = 0.0
    return filterbank, 700.0 * (np.exp(edges[1:-1] / 1127.0) - 1.0)


def _log_offset(power: np.ndarray, *, amin: float) -> np.ndarray:
    """``np.log(power + amin)`` in float32, in one array beside ``power``."""
    values = power + np.float32(amin)
    return np.log(values, out=values)
