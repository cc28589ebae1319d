"""The features of a whole file, computed block by block (:func:`stream_features`).

What it buys: memory follows the size of the features, not of the audio. The
whole-file path (:func:`~melstore.features.audio.decode`, then
:class:`~melstore.features.extractor.FeatureExtractor`) holds the decoded
channels, the mono and resampled signals and every STFT frame at once, so a
long recording costs many times its features. Here the file is read in blocks;
each is downmixed, resampled by soxr's streaming resampler and framed, and only
its linear spectrogram (the kind's power, float32) is kept. The log, whose
reference is the whole file's peak (``ref: max``, ``top_db``), and the deltas
are taken at the end, as the whole-file path takes them.

The features are the whole-file path's, bit for bit: soxr's stream gives the
samples and the length of its one-shot ``resample``, the framing carries the
samples a frame shares with the next block, centring pads the start and the end
from the samples at each end, as ``np.pad`` pads the whole signal, and each
frame is the same float32 arithmetic on the same samples (tests/test_streaming.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soxr

from melstore.features.audio import (
    AudioInfo,
    check_res_type,
    decode,
    decode_blocks,
    fix_length,
    resampled_length,
)
from melstore.features.extractor import ClipFeatures, FeatureExtractor, FeatureParams

# long enough that the per-block Python work is negligible, short enough that a block is small
DEFAULT_BLOCK_SECONDS = 10.0
# np.pad modes whose padding at one end is made of the samples at that end only
EDGE_PAD_MODES = ("constant", "edge", "reflect", "symmetric")


@dataclass(frozen=True)
class FileFeatures:
    """The features of a whole file, and its header."""

    clip: ClipFeatures
    info: AudioInfo


def file_features(extractor: FeatureExtractor, source: str | Path | bytes) -> FileFeatures:
    """The features of one file, as a build and ``melstore.extractor`` compute them.

    A variable-length set (``duration: null``), whose files may be hours long,
    streams the file (:func:`stream_features`); a fixed-length set decodes its
    ``duration`` seconds whole, which bounds its memory already. Both give the
    same bits.

    Raises
    ------
    AudioError
        If the file cannot be used (:func:`~melstore.features.audio.decode`).
    """
    if extractor.params.duration is None:
        return stream_features(extractor, source)
    y, info = decode(source, max_duration=extractor.params.duration)
    return FileFeatures(extractor(y, sr=info.sample_rate), info)


def stream_features(
    extractor: FeatureExtractor,
    source: str | Path | bytes,
    *,
    block_seconds: float = DEFAULT_BLOCK_SECONDS,
) -> FileFeatures:
    """``extractor(*decode(source, max_duration=...))``, reading ``block_seconds`` at a time.

    Memory is about twice that of the features (their power, then its log),
    and a block of audio and its frames, whatever the length of the file (see
    the module's docstring).

    Parameters
    ----------
    extractor : FeatureExtractor
        The feature set's extractor; fixed-length sets stream too.
    source : str, Path or bytes
        The audio file, as :func:`~melstore.features.audio.decode` takes it.
    block_seconds : float
        Seconds of audio decoded at a time.

    Returns
    -------
    FileFeatures
        The same :class:`ClipFeatures` as the whole-file path, and the same
        header as :func:`~melstore.features.audio.decode`.

    Raises
    ------
    AudioError
        Where :func:`~melstore.features.audio.decode` raises it.
    ValueError
        If the set centres its frames with a ``pad_mode`` not in
        :data:`EDGE_PAD_MODES`, or its ``res_type`` is not soxr's.
    """
    framer = _Framer(extractor)
    with decode_blocks(
        source, block_seconds=block_seconds, max_duration=extractor.params.duration
    ) as audio:
        signal = _PreparedSignal(extractor.params, orig_sr=audio.info.sample_rate)
        framer.reserve(signal.expected_frames(audio.info.frames))
        for block in audio.blocks:
            framer.push(signal.push(block))
    end = signal.finish()
    power = framer.finish(end.samples)
    return FileFeatures(extractor.finish(power, n_samples_valid=end.n_samples_valid), audio.info)


@dataclass(frozen=True)
class _SignalEnd:
    """The last samples of a prepared signal, and how many of all its samples are the clip's."""

    samples: np.ndarray
    n_samples_valid: int


class _PreparedSignal:
    """:meth:`FeatureExtractor.prepare` of a signal given in mono blocks at its native rate.

    :meth:`push` returns the samples that are certainly the prepared signal's
    next ones; :meth:`finish` returns the rest, resampled and trimmed or padded
    as ``prepare`` does it to the whole signal.
    """

    def __init__(self, params: FeatureParams, *, orig_sr: int):
        self._params = params
        self._orig_sr = orig_sr
        self._resampler = None
        if orig_sr != params.sr:
            check_res_type(params.res_type)
            self._resampler = soxr.ResampleStream(
                orig_sr, params.sr, 1, dtype="float32", quality=params.res_type
            )
        self._pending = np.zeros(0, np.float32)
        self._n_read = 0
        self._n_released = 0

    def push(self, block: np.ndarray) -> np.ndarray:
        """Take the next mono block; return the prepared samples it completes."""
        self._n_read += len(block)
        resampled = block if self._resampler is None else self._resampler.resample_chunk(block)
        pending = np.concatenate([self._pending, resampled])
        # the length prepare gives what was read so far can only grow: those samples are final
        final = self._resampled_length()
        if self._params.n_samples is not None:
            final = min(final, self._params.n_samples)
        ready = max(0, min(len(pending), final - self._n_released))
        self._pending = pending[ready:]
        self._n_released += ready
        return pending[:ready]

    def finish(self) -> _SignalEnd:
        """The samples after those pushed, to the length ``prepare`` gives the whole signal."""
        rest = self._pending
        if self._resampler is not None:
            flushed = self._resampler.resample_chunk(np.zeros(0, np.float32), last=True)
            rest = np.concatenate([rest, flushed])
        n_valid = self._resampled_length()
        rest = fix_length(rest, n_valid - self._n_released)
        if self._params.n_samples is not None:
            rest = fix_length(rest, self._params.n_samples - self._n_released)
        return _SignalEnd(rest, n_valid)

    def expected_frames(self, native_frames: int) -> int:
        """The frames of the prepared signal of a file of ``native_frames``, as its header says."""
        p = self._params
        n_read = (
            native_frames
            if p.duration is None
            else min(native_frames, int(p.duration * self._orig_sr))
        )
        n_prepared = resampled_length(n_read, orig_sr=self._orig_sr, target_sr=p.sr)
        return p.frames_for(n_prepared if p.n_samples is None else p.n_samples)

    def _resampled_length(self) -> int:
        return resampled_length(self._n_read, orig_sr=self._orig_sr, target_sr=self._params.sr)


class _Framer:
    """The kind's linear spectrogram of a signal given in pieces, frame by frame.

    It keeps the samples from the start of the next frame on. A centred set's
    signal is padded at the start once more than ``n_fft // 2`` samples have
    come, and at the end from the last ``n_fft // 2 + 1``, which it therefore
    keeps: with ``EDGE_PAD_MODES``, this is the padding of the whole signal.
    """

    def __init__(self, extractor: FeatureExtractor):
        p = extractor.params
        self._extractor = extractor
        self._centred = extractor.kind.centred(p)
        if self._centred and p.pad_mode not in EDGE_PAD_MODES:
            raise ValueError(
                f"streamed features pad centred frames with one of {EDGE_PAD_MODES}, "
                f"not {p.pad_mode!r}"
            )
        self._pad_mode = p.pad_mode
        self._pad = p.n_fft // 2 if self._centred else 0
        self._kept = self._pad + 1 if self._centred else 0
        self._frame_length = p.frame_length
        self._hop = p.hop_length
        self._start_padded = not self._centred
        self._samples = np.zeros(0, np.float32)
        self._power = np.zeros((extractor.params.n_bins, 0), np.float32)
        self._n_frames = 0

    def push(self, samples: np.ndarray) -> None:
        """Take the next samples of the prepared signal; frame what they complete."""
        self._samples = np.concatenate([self._samples, samples])
        if not self._start_padded:
            if len(self._samples) <= self._pad:
                return
            self._samples = np.pad(self._samples, (self._pad, 0), mode=self._pad_mode)
            self._start_padded = True
        usable = len(self._samples) - self._kept
        if usable < self._frame_length:
            return
        # a hop longer than a frame skips samples: keep those the next frame and the end need
        whole_frames = (usable - self._frame_length) // self._hop + 1
        frames = min(whole_frames, usable // self._hop)
        if frames == 0:
            return
        framed = self._samples[: (frames - 1) * self._hop + self._frame_length]
        self._append(self._extractor.power_spectrogram(framed, padded=True))
        self._samples = self._samples[frames * self._hop :]

    def finish(self, samples: np.ndarray) -> np.ndarray:
        """Take the last samples; return the spectrogram of the whole signal."""
        self._samples = np.concatenate([self._samples, samples])
        if self._centred:
            start = 0 if self._start_padded else self._pad  # else the whole signal is here
            self._samples = np.pad(self._samples, (start, self._pad), mode=self._pad_mode)
        # the kind pads a signal shorter than a frame; the rest of a longer one makes no frame
        if not self._n_frames or len(self._samples) >= self._frame_length:
            self._append(self._extractor.power_spectrogram(self._samples, padded=True))
        power = self._power[:, : self._n_frames]
        self._power = self._power[:, :0]
        return power

    def reserve(self, n_frames: int) -> None:
        """Make room for the ``n_frames`` the header promises: no copy as they come."""
        self._power = np.empty((self._power.shape[0], n_frames), np.float32)

    def _append(self, power: np.ndarray) -> None:
        """Put a piece's frames after the others, growing the array if the header said fewer."""
        stop = self._n_frames + power.shape[1]
        if stop > self._power.shape[1]:
            grown = np.empty(
                (self._power.shape[0], max(stop, 2 * self._power.shape[1])), np.float32
            )
            grown[:, : self._n_frames] = self._power[:, : self._n_frames]
            self._power = grown
        self._power[:, self._n_frames : stop] = power
        self._n_frames = stop
