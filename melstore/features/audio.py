"""Audio input: decode with soundfile (whole or by blocks), downmix, resample with soxr.

Only libsndfile (through soundfile) decodes every format found in the target
datasets correctly: PCM 8/16/24/32, float, 4-bit IMA ADPCM, WAVE_FORMAT_EXTENSIBLE,
FLAC, OGG and MP3. scipy.io.wavfile, the wave module and audioread corrupt or reject
some of them (docs/design.md).
"""

from __future__ import annotations

import hashlib
import io
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
import xxhash

from melstore.errors import AudioError
from melstore.files import atomic_path

SOXR_QUALITIES = ("soxr_vhq", "soxr_hq", "soxr_mq", "soxr_lq", "soxr_qq")


@dataclass(frozen=True)
class AudioInfo:
    """What the file header says about a recording, before any processing."""

    sample_rate: int
    channels: int
    subtype: str
    format: str
    frames: int

    @classmethod
    def of(cls, header) -> AudioInfo:
        """From a ``soundfile.SoundFile`` or ``soundfile.info`` result."""
        return cls(
            sample_rate=header.samplerate,
            channels=header.channels,
            subtype=header.subtype,
            format=header.format,
            frames=header.frames,
        )

    @property
    def duration(self) -> float:
        """Length of the whole recording in seconds."""
        return self.frames / self.sample_rate


def file_checksum(path: str | Path) -> str:
    """The XXH3-128 of a file (as ``xxh128sum`` prints it), streamed.

    XXH3, not sha256, because it is fast enough to hash every file that is
    decoded (docs/design.md). It detects any accidental change; it is not meant
    to resist deliberate collisions. I/O problems become an :class:`AudioError`.
    """
    try:
        with open(path, "rb") as handle:
            return hashlib.file_digest(handle, xxhash.xxh3_128).hexdigest()
    except OSError as err:
        raise unreadable(err) from None


def unreadable(err: OSError) -> AudioError:
    """Why a file cannot be read, in the words of the failures table."""
    if isinstance(err, FileNotFoundError):
        return AudioError("file not found")
    if isinstance(err, PermissionError):
        return AudioError("cannot read file: permission denied")
    if isinstance(err, IsADirectoryError):
        return AudioError("is a directory, not an audio file")
    return AudioError(f"cannot read file: {err.strerror or err}")


def read_header(path: str | Path) -> AudioInfo:
    """What the header of the audio file at ``path`` says, without decoding it.

    Raises
    ------
    AudioError
        If the file is not readable audio.
    """
    try:
        return AudioInfo.of(sf.info(os.fspath(path)))
    except (sf.LibsndfileError, sf.SoundFileError, RuntimeError, OSError) as err:
        raise AudioError(f"{path}: not readable audio: {err}") from None


def decode(
    source: str | Path | bytes, *, max_duration: float | None = None
) -> tuple[np.ndarray, AudioInfo]:
    """Decode an audio file to a mono float32 signal at the native sample rate.

    Parameters
    ----------
    source : str, Path or bytes
        The file, or its encoded bytes (any format libsndfile reads). A path
        is read by libsndfile itself, faster than in-memory bytes, which go
        through Python callbacks.
    max_duration : float or None
        Decode at most ``int(max_duration * native_sr)`` frames, exactly as
        ``librosa.load(duration=...)`` does; ``None`` decodes everything.

    Returns
    -------
    y : np.ndarray
        float32 samples in [-1, 1], shape (n,), the mean of all channels.
    info : AudioInfo
        The header of the whole file.

    Raises
    ------
    AudioError
        If the file cannot be read, or the bytes are not decodable audio,
        hold no frames, or hold non-finite samples.
    """
    with _opened(source) as audio:
        info = AudioInfo.of(audio)
        samples = _read(audio, frames=_frames_to_read(info, max_duration=max_duration))
    if samples.shape[0] == 0:
        raise AudioError("no audio frames")
    return downmix(samples), info


@dataclass(frozen=True)
class DecodedBlocks:
    """An open audio file and its mono blocks, in order (:func:`decode_blocks`)."""

    info: AudioInfo
    blocks: Iterator[np.ndarray]


@contextmanager
def decode_blocks(
    source: str | Path | bytes, *, block_seconds: float, max_duration: float | None = None
) -> Iterator[DecodedBlocks]:
    """:func:`decode`, a block at a time: the same samples, errors and header.

    Parameters
    ----------
    source : str, Path or bytes
        As for :func:`decode`.
    block_seconds : float
        Seconds of audio per block, at least one frame; the last block may hold fewer.
    max_duration : float or None
        As for :func:`decode`.

    Yields
    ------
    DecodedBlocks
        The header, and the float32 blocks, each the mean of all channels as
        :func:`downmix` makes it. The blocks are read while they are iterated,
        inside the ``with``; iterating raises what :func:`decode` raises for
        unreadable data, no frames or non-finite samples.
    """
    with _opened(source) as audio:
        info = AudioInfo.of(audio)
        frames = _frames_to_read(info, max_duration=max_duration)
        block_frames = max(1, round(block_seconds * info.sample_rate))
        yield DecodedBlocks(info, _mono_blocks(audio, frames=frames, block_frames=block_frames))


def _mono_blocks(audio: sf.SoundFile, *, frames: int, block_frames: int) -> Iterator[np.ndarray]:
    """Downmixed blocks of at most ``block_frames`` until ``frames`` are read (-1: all)."""
    read = 0
    while frames < 0 or read < frames:
        wanted = block_frames if frames < 0 else min(block_frames, frames - read)
        samples = _read(audio, frames=wanted)
        if samples.shape[0] == 0:
            break
        read += samples.shape[0]
        yield downmix(samples)
    if read == 0:
        raise AudioError("no audio frames")


@contextmanager
def _opened(source: str | Path | bytes) -> Iterator[sf.SoundFile]:
    """The open file, with :func:`decode`'s errors for an empty or undecodable one."""
    in_memory = isinstance(source, bytes)
    try:
        size = len(source) if in_memory else os.stat(source).st_size
    except OSError as err:  # a build hashes each file first; a caller may not
        raise unreadable(err) from None
    if size == 0:
        raise AudioError("empty file (0 bytes)")
    with _decoding_errors():
        audio = sf.SoundFile(io.BytesIO(source) if in_memory else os.fspath(source))
    with audio:
        yield audio


def _frames_to_read(info: AudioInfo, *, max_duration: float | None) -> int:
    """Frames :func:`decode` reads: as ``librosa.load(duration=...)``; -1 for all of them."""
    return -1 if max_duration is None else int(max_duration * info.sample_rate)


def _read(audio: sf.SoundFile, *, frames: int) -> np.ndarray:
    """The next ``frames`` (-1: all) as float32 (frames, channels), checked to be finite."""
    with _decoding_errors():
        samples = audio.read(frames=frames, dtype="float32", always_2d=True)
    # only float encodings can hold NaN or Inf, so only they pay for the scan
    if audio.subtype in ("FLOAT", "DOUBLE") and not np.isfinite(samples).all():
        raise AudioError("non-finite samples (NaN or Inf) in the audio data")
    return samples


@contextmanager
def _decoding_errors() -> Iterator[None]:
    """Turn soundfile's errors while opening or reading into :class:`AudioError`."""
    try:
        yield
    except sf.LibsndfileError as err:
        raise AudioError(f"not decodable audio: {err.error_string.rstrip('.')}") from None
    except OSError as err:
        raise AudioError(f"cannot read file: {err.strerror or err}") from None
    except (sf.SoundFileError, RuntimeError, ValueError) as err:
        raise AudioError(f"not decodable audio: {err}") from None


def downmix(samples: np.ndarray) -> np.ndarray:
    """Average the channels of soundfile's (frames, channels) layout.

    Adding whole columns is much faster than ``np.mean(axis=1)``, which
    reduces along the short inner axis (see docs/design.md). Adding channels
    in order, then dividing, gives the same float32 bits as librosa's
    ``to_mono`` (a mean over axis 0 of the (channels, frames) layout).
    """
    mono = samples[:, 0].copy()
    for channel in range(1, samples.shape[1]):
        mono += samples[:, channel]
    if samples.shape[1] > 1:
        mono /= np.float32(samples.shape[1])
    return mono


def resample(y: np.ndarray, *, orig_sr: int, target_sr: int, res_type: str) -> np.ndarray:
    """Resample like ``librosa.resample(..., res_type=soxr_*)``, without importing librosa.

    The output length is ``ceil(len(y) * target_sr / orig_sr)``, as in librosa.
    """
    if orig_sr == target_sr:
        return y
    check_res_type(res_type)
    out = soxr.resample(y, orig_sr, target_sr, quality=res_type)
    return fix_length(
        out.astype(np.float32, copy=False),
        resampled_length(len(y), orig_sr=orig_sr, target_sr=target_sr),
    )


def resampled_length(n_samples: int, *, orig_sr: int, target_sr: int) -> int:
    """Samples :func:`resample` makes of ``n_samples``: ``ceil(n * target_sr / orig_sr)``."""
    return math.ceil(n_samples * target_sr / orig_sr)


def check_res_type(res_type: str) -> None:
    """Refuse a ``res_type`` that is not one of :data:`SOXR_QUALITIES` (``ValueError``)."""
    if res_type not in SOXR_QUALITIES:
        raise ValueError(f"res_type must be one of {SOXR_QUALITIES}, got {res_type!r}")


def fix_length(y: np.ndarray, size: int) -> np.ndarray:
    """Trim ``y`` or zero-pad it at the end to exactly ``size`` samples."""
    if len(y) >= size:
        return y[:size]
    return np.pad(y, (0, size - len(y)))


def write_audio(
    path: str | Path, samples: np.ndarray, sr: int, *, container: str, subtype: str
) -> None:
    """Write an audio file atomically and reproducibly (for generated datasets).

    The same samples always give the same bytes: the PEAK chunk libsndfile
    adds to float WAV and WAVEX files holds the time of writing, so it is
    blanked (`blank_peak_chunk`).
    """
    encoded = io.BytesIO()
    sf.write(encoded, samples, sr, format=container, subtype=subtype)
    with atomic_path(path) as tmp:
        tmp.write_bytes(blank_peak_chunk(encoded.getvalue()))


def blank_peak_chunk(wav: bytes) -> bytes:
    """``wav``, a RIFF WAVE file, with its PEAK chunk made a zero-filled PAD chunk of its size.

    These are the bytes libsndfile writes when told to add no PEAK chunk
    after the header is written, as melstore did before, so generated files
    keep their bytes. Anything else (no PEAK chunk, not RIFF WAVE) is
    returned as is.
    """
    offset = 12 if wav[:4] == b"RIFF" and wav[8:12] == b"WAVE" else len(wav)
    while offset + 8 <= len(wav):
        size = int.from_bytes(wav[offset + 4 : offset + 8], "little")
        if wav[offset : offset + 4] == b"PEAK":
            padding = b"PAD " + wav[offset + 4 : offset + 8] + bytes(size)
            return wav[:offset] + padding + wav[offset + 8 + size :]
        offset += 8 + size + size % 2  # chunks start on even offsets
    return wav
