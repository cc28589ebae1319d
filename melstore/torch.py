"""A store's features at inference, in PyTorch: ``FrontEnd.from_store(STORE)``.

The module turns a batch of waveforms, already at the store's sample rate,
into the features the store holds for such clips, with the window, filter bank
and parameters the store recorded. Each feature kind computes its own features
(:meth:`melstore.features.kinds.FeatureKind.torch_power_spectrogram` and
:meth:`~melstore.features.kinds.FeatureKind.torch_log`).

Importing this module needs torch (the ``torch`` extra); nothing else in
melstore imports it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from melstore.errors import MelstoreError
from melstore.features.extractor import FeatureParams, Frontend
from melstore.features.kinds import feature_kind
from melstore.store.reader import Store


class FrontEnd(torch.nn.Module):
    """Waveforms at the store's sample rate to the store's features, as an ``nn.Module``.

    Make one with :meth:`from_store`. It does not resample: resample each clip
    to ``params.sr`` first, as the store's build did (``res_type``: soxr at
    that quality), e.g. ``soxr.resample(y, sr, front_end.params.sr,
    quality=front_end.params.res_type)``.

    A fixed-length set's waveforms are trimmed or zero-padded at the end to
    its duration first, as the build does after resampling; a variable-length
    set (``duration: null``) gives the frames of the samples given. Each clip
    of the batch is log-scaled against its own peak (``ref: max``, ``top_db``).

    The window, the filter bank and the delta kernel are buffers, so
    ``.to(device)`` and ``.to(dtype)`` move them; ``torch.export.export``
    exports the module for a given number of samples (the batch may be a
    dynamic dimension). On CPU the module computes clip by clip, which keeps
    the frames in the caches; compiled, exported or on another device, the
    whole batch at once.

    Parameters
    ----------
    frontend : Frontend
        The feature set's parameters and its window and filter bank.

    Attributes
    ----------
    params : FeatureParams
        The feature set's parameters (``sr``, ``duration``, ``clip_shape``...).
    kind : FeatureKind
        The feature kind, which computes the features.
    """

    def __init__(self, *, frontend: Frontend):
        super().__init__()
        self.params = frontend.params
        self.kind = feature_kind(self.params.kind)
        self.register_buffer("window", _float32_tensor(frontend.window))
        filterbank = frontend.filterbank
        self.register_buffer(
            "filterbank", None if filterbank is None else _float32_tensor(filterbank)
        )
        self.register_buffer(
            "delta_kernel",
            _float32_tensor(slope_kernel(self.params.delta_width)) if self.params.deltas else None,
        )

    @classmethod
    def from_store(cls, store: str | Path | Store) -> FrontEnd:
        """The front end of a store's feature set, from its recorded parameters and arrays.

        Parameters
        ----------
        store : str, Path or Store
            A store's path, or an open :class:`~melstore.store.reader.Store`.

        Raises
        ------
        MelstoreError
            If the store cannot be opened, or was written before melstore kept
            its window and filter bank.
        """
        if not isinstance(store, Store):
            with Store(store) as opened:
                return cls.from_store(opened)
        if not store.frontend:
            raise MelstoreError(
                f"{store.path} keeps no window and filter bank (written by an older melstore); "
                "rebuild it with the workflow"
            )
        params = FeatureParams.from_dict(store.params)
        return cls(frontend=Frontend.from_arrays(params, store.frontend))

    def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
        """The features of each waveform.

        Parameters
        ----------
        waveforms : torch.Tensor
            (batch, samples), mono, at ``params.sr``, in the module's dtype
            (float32 unless moved) and on its device.

        Returns
        -------
        torch.Tensor
            (batch, n_bins, n_frames), or (batch, 2, n_bins, n_frames) with
            deltas: the shape of the store's clips.

        Raises
        ------
        MelstoreError
            If ``waveforms`` is not 2-D, holds no samples, or is of another
            dtype or device than the module.
        """
        self._check(waveforms)
        if (
            not torch.compiler.is_compiling()
            and waveforms.device.type == "cpu"
            and len(waveforms) > 1
        ):
            # clip by clip: a batch's frames outgrow the CPU's caches (2-3x slower at 32 x 4 s)
            return torch.cat([self._features(clip) for clip in waveforms.split(1)])
        return self._features(waveforms)

    def _features(self, waveforms: torch.Tensor) -> torch.Tensor:
        """The features of a checked batch, computed all at once."""
        p = self.params
        if p.n_samples is not None:  # a negative pad trims
            waveforms = F.pad(waveforms, (0, p.n_samples - waveforms.shape[-1]))
        power = self.kind.torch_power_spectrogram(
            waveforms, params=p, window=self.window, filterbank=self.filterbank
        )
        features = self.kind.torch_log(power, params=p)
        if p.deltas:
            return torch.stack([features, delta(features, kernel=self.delta_kernel)], dim=1)
        return features

    def _check(self, waveforms: torch.Tensor) -> None:
        where = f"FrontEnd of {self.params.kind} at {self.params.sr} Hz"
        if waveforms.ndim != 2:
            raise MelstoreError(
                f"{where}: waveforms must be (batch, samples); got shape {tuple(waveforms.shape)} "
                "(one clip: waveforms[None])"
            )
        if waveforms.shape[-1] == 0:
            raise MelstoreError(f"{where}: waveforms hold no samples")
        if waveforms.dtype != self.window.dtype:
            raise MelstoreError(
                f"{where}: waveforms are {waveforms.dtype}, the module computes in "
                f"{self.window.dtype}; cast them with .to({self.window.dtype})"
            )
        if waveforms.device != self.window.device:
            raise MelstoreError(
                f"{where}: waveforms are on {waveforms.device}, the module on "
                f"{self.window.device}; move one with .to(device)"
            )


def slope_kernel(width: int) -> np.ndarray:
    """Weights giving the least-squares slope of a line through ``width`` frames, per frame.

    This is ``scipy.signal.savgol_coeffs(width, 1, deriv=1)`` in correlation
    order, the filter of :func:`melstore.features.extractor.delta`.
    """
    offsets = np.arange(width) - width // 2
    return offsets / np.square(offsets).sum()


def delta(features: torch.Tensor, *, kernel: torch.Tensor) -> torch.Tensor:
    """:func:`melstore.features.extractor.delta` (``librosa.feature.delta``) of a batch.

    Parameters
    ----------
    features : torch.Tensor
        (batch, n_bins, n_frames), with ``n_frames >= len(kernel)``.
    kernel : torch.Tensor
        :func:`slope_kernel` of the delta width.
    """
    half = kernel.shape[-1] // 2
    slopes = features.unfold(-1, kernel.shape[-1], 1) @ kernel
    # mode 'interp' fits one line to the first (last) whole window: its edge frames share its slope
    return F.pad(slopes, (half, half), mode="replicate")


def _float32_tensor(values: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32))
