"""Features of new audio, computed exactly as a store's build computed its clips.

A model trained on a store needs the same features at inference.
:class:`Extractor` takes everything from the store (its parameters, the window
and filter bank it kept, how it rounds values) and runs the build's own code:
decode, downmix, resample, trim or pad, the spectrogram, then the store's
rounding. So ``from_file`` gives, for any file the store holds, the bits
``store.clip`` reads.

The reader never imports this module: reading a store still needs only numpy,
h5py and pandas, while computing features needs soundfile, soxr and scipy.
"""

from __future__ import annotations

import numbers
import warnings
from pathlib import Path

import numpy as np

from melstore.errors import AudioError, MelstoreError, VersionWarning
from melstore.features.audio import downmix
from melstore.features.extractor import ClipFeatures, FeatureExtractor, FeatureParams, Frontend
from melstore.features.streaming import file_features
from melstore.store.format import Storage, describe_version_changes, version_changes
from melstore.store.reader import Store

# What from_array calls the audio in its error messages.
SAMPLES = "samples"


class Extractor:
    """Computes features for new audio as one store's build computed its clips.

    Make one with :func:`melstore.extractor`. It reads the store once, when it
    is made, and keeps no file open.

    Parameters
    ----------
    store : str, Path or Store
        The store, or one already open (it is left open).
    rounded : bool
        For a compact store (``precision_db``), round every value as the
        store did, so that a clip's features equal the stored ones (the
        default); False gives the float32 values before rounding. Other
        stores keep their values unrounded either way.

    Attributes
    ----------
    store : Path
        The store the computation comes from.
    feature_set : str
        Its feature set's name.
    params : dict
        Its feature parameters, as :attr:`Store.params`.
    clip_shape : tuple of int or None
        The shape of one clip's features; None for a variable-length store,
        whose clips have as many frames as their audio gives.
    rounded : bool
        Whether values are rounded as the store rounds them.

    Raises
    ------
    MelstoreError
        If the store cannot be read, or keeps no window and filter bank.

    Warns
    -----
    VersionWarning
        Once, naming them, if the installed libraries' versions differ from
        those the store records: the features may then differ slightly.

    Examples
    --------
    >>> extract = melstore.extractor("results/demo/seed.h5")
    >>> x = extract.from_file("new.wav")  # (128, 130) float32, dB: as the store's clips
    """

    def __init__(self, store: str | Path | Store, *, rounded: bool = True):
        if isinstance(store, Store):
            self._read(store)
        else:
            with Store(store) as opened:
                self._read(opened)
        self.rounded = rounded

    def _read(self, store: Store) -> None:
        """Take the computation from ``store``; warn if its libraries were other than these."""
        if not store.frontend:
            raise MelstoreError(
                f"{store.path} keeps no window and filter bank (it holds no clips), "
                "so its features cannot be computed for new audio"
            )
        self.store = store.path
        self.dataset_root = store.attrs.get("dataset_root")
        self.feature_set = store.feature_set
        self.params = store.params
        feature_params = FeatureParams.from_dict(store.params)
        self.clip_shape = feature_params.clip_shape
        self._compute = FeatureExtractor(Frontend.from_arrays(feature_params, store.frontend))
        self._storage = Storage(precision_db=store.precision_db)
        changes = version_changes(store.versions)
        if changes:
            warnings.warn(
                f"{store.path} was built with other library versions: "
                f"{describe_version_changes(changes)}; features computed here may differ "
                "slightly from its clips (melstore verify --recompute measures by how much)",
                VersionWarning,
                stacklevel=4,  # the caller of melstore.extractor
            )

    def __repr__(self) -> str:
        shape = self.clip_shape or "variable length"
        return f"<melstore.Extractor of {self.store} ({self.feature_set}, {shape})>"

    def from_file(self, path: str | Path) -> np.ndarray:
        """The features of an audio file, as the store would hold them.

        Parameters
        ----------
        path : str or Path
            Any file libsndfile reads (wav, flac, ogg, mp3, aiff...).

        Returns
        -------
        np.ndarray
            float32, shaped like the store's clips: (n_bins, n_frames), or
            (channels, n_bins, n_frames) with deltas; n_frames follows the
            audio's length in a variable-length store.

        Raises
        ------
        AudioError
            One line naming the file and why it cannot be used.
        """
        try:
            computed = file_features(self._compute, path)
        except AudioError as err:
            raise AudioError(f"{path}: {err}") from None
        return self._stored(computed.clip, name=str(path))

    def from_array(self, samples: np.ndarray, *, sr: int) -> np.ndarray:
        """The features of audio samples, as :meth:`from_file` gives them for a file of them.

        Parameters
        ----------
        samples : np.ndarray
            Floating-point samples in [-1, 1]: mono ``(n,)``, or ``(channels,
            n)`` as librosa lays them out (soundfile's ``(n, channels)``
            transposed), at any rate. They are made float32 first, so
            ``soundfile.read(path, dtype="float32")[0].T`` gives exactly
            ``from_file(path)``; float64 from 8 to 24-bit PCM gives the same.
            The store's duration is cut and the channels averaged as a build
            does with a file.
        sr : int
            Sample rate of ``samples``, in Hz.

        Returns
        -------
        np.ndarray
            float32, as :meth:`from_file`.

        Raises
        ------
        MelstoreError
            If ``samples`` or ``sr`` are not audio as described, naming which.
        AudioError
            If ``samples`` hold no frames, or NaN or Inf.
        """
        y = self._mono(np.asarray(samples), sr=sr)
        return self._stored(self._compute(y, sr=int(sr)), name=SAMPLES)

    def _mono(self, samples: np.ndarray, *, sr: int) -> np.ndarray:
        """The samples as decode gives a file's: cut to the duration, float32, downmixed."""
        if not isinstance(sr, numbers.Integral) or isinstance(sr, bool) or sr <= 0:
            raise MelstoreError(f"sr: {sr!r} is not a sample rate (a positive whole number of Hz)")
        if samples.dtype.kind != "f":
            raise MelstoreError(
                f"{SAMPLES}: {samples.dtype} values; give floating-point samples in [-1, 1], "
                'as soundfile.read(path, dtype="float32") returns them'
            )
        channels_last = samples.ndim == 2 and 0 < samples.shape[1] < samples.shape[0]
        if samples.ndim not in (1, 2) or channels_last:
            raise MelstoreError(
                f"{SAMPLES}: shape {samples.shape}; give (n,) for mono or (channels, n) with "
                "fewer channels than samples (soundfile's (n, channels) transposed: .T)"
            )
        duration = self._compute.params.duration
        if duration is not None:  # decode reads no more frames than this, before resampling
            samples = samples[..., : int(duration * sr)]
        if samples.shape[-1] == 0:
            raise AudioError(f"{SAMPLES}: no audio frames")
        frames = np.atleast_2d(samples).T.astype(np.float32, copy=False)  # (n, channels)
        if not np.isfinite(frames).all():
            raise AudioError(f"{SAMPLES}: non-finite samples (NaN or Inf)")
        return downmix(frames)

    def _stored(self, clip: ClipFeatures, *, name: str) -> np.ndarray:
        """A clip's features as the build stores them (compute_clip): checked finite, rounded."""
        if not np.isfinite(clip.features).all():
            raise AudioError(f"{name}: features are not finite")
        if not self.rounded:
            return clip.features
        values, _ = self._storage.quantise(clip.features, name=name)
        return values.astype(np.float32, copy=False)  # float16 in the store, float32 read
