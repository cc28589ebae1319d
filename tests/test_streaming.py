"""Streamed features (melstore.features.streaming) equal the whole-file path's bit for bit."""

import functools
import math

import numpy as np
import pytest
import soundfile as sf
import soxr
from conftest import tone, write_audio

from melstore.errors import AudioError
from melstore.features import streaming
from melstore.features.audio import SOXR_QUALITIES, decode, decode_blocks, resample
from melstore.features.extractor import FeatureExtractor, FeatureParams, Frontend
from melstore.features.kinds import FEATURE_KINDS
from melstore.features.presets import PRESETS
from melstore.features.streaming import EDGE_PAD_MODES, stream_features

BLOCK_SECONDS = 0.5
# every registered kind, both paddings of centred frames, a hop as long as the frame
STREAMED_PRESETS = ("seed", "piczak2015", "salamon2017", "vggish", "logspec", "panns")
RATE_PAIRS = [(44100, 22050), (48000, 16000), (8000, 16000), (44100, 32000), (22050, 44100)]


def test_the_presets_cover_every_registered_kind():
    assert {PRESETS[name]["kind"] for name in STREAMED_PRESETS} == set(FEATURE_KINDS)


@pytest.mark.parametrize("quality", SOXR_QUALITIES)
@pytest.mark.parametrize(("orig_sr", "target_sr"), RATE_PAIRS)
def test_soxr_stream_gives_the_one_shot_samples_and_length(quality, orig_sr, target_sr):
    y = tone(orig_sr, 1.37, seed=3)[:, 0]
    one_shot = soxr.resample(y, orig_sr, target_sr, quality=quality)
    stream = soxr.ResampleStream(orig_sr, target_sr, 1, dtype="float32", quality=quality)
    pieces = [stream.resample_chunk(y[start : start + 4099]) for start in range(0, len(y), 4099)]
    pieces.append(stream.resample_chunk(np.zeros(0, np.float32), last=True))
    np.testing.assert_array_equal(np.concatenate(pieces), one_shot)
    # resample pads soxr's output to librosa's length: by at most one sample
    expected = math.ceil(len(y) * target_sr / orig_sr)
    assert expected - 1 <= len(one_shot) <= expected
    assert len(resample(y, orig_sr=orig_sr, target_sr=target_sr, res_type=quality)) == expected


@functools.cache
def extractor_of(preset: str, *, variable: bool, deltas: bool) -> FeatureExtractor:
    """The preset's extractor; ``variable`` makes its duration null.

    Variable-length sets with deltas are refused by the configuration, not by
    the extractor, so their streaming is checked too.
    """
    values = {**PRESETS[preset], "deltas": deltas}
    if variable:
        values["duration"] = None
    return FeatureExtractor(Frontend.build(FeatureParams.from_dict(values)))


def assert_streamed_equals_whole_file(extractor, source, *, block_seconds=BLOCK_SECONDS):
    y, info = decode(source, max_duration=extractor.params.duration)
    whole = extractor(y, sr=info.sample_rate)
    streamed = stream_features(extractor, source, block_seconds=block_seconds)
    assert streamed.info == info
    assert streamed.clip.features.dtype == whole.features.dtype
    np.testing.assert_array_equal(streamed.clip.features, whole.features)
    assert streamed.clip.n_samples_valid == whole.n_samples_valid
    assert streamed.clip.n_frames_valid == whole.n_frames_valid
    assert streamed.clip.peak_db == whole.peak_db


def native_rate(params: FeatureParams, rate: str) -> int:
    return {"same": params.sr, "higher": 48000 if params.sr == 44100 else 44100, "lower": 8000}[
        rate
    ]


@pytest.mark.parametrize("preset", STREAMED_PRESETS)
@pytest.mark.parametrize("deltas", [False, True], ids=["plain", "deltas"])
@pytest.mark.parametrize("channels", [1, 2], ids=["mono", "stereo"])
@pytest.mark.parametrize("rate", ["same", "higher", "lower"])
@pytest.mark.parametrize("blocks", [0.6, 1.0, 3.0123], ids=["part-block", "one-block", "odd"])
def test_variable_length_features_equal_the_whole_file_path(
    tmp_path, preset, deltas, channels, rate, blocks
):
    extractor = extractor_of(preset, variable=True, deltas=deltas)
    sr = native_rate(extractor.params, rate)
    frames = round(blocks * BLOCK_SECONDS * sr) + (7 if blocks % 1 else 0)
    path = write_audio(tmp_path / "clip.wav", tone(sr, frames / sr, channels), sr)
    assert sf.info(path).frames == frames
    assert_streamed_equals_whole_file(extractor, path)


@pytest.mark.parametrize("promised", [0.0, 0.3, 2.0], ids=["none", "fewer", "more"])
def test_a_header_promising_other_frames_changes_no_bit(tmp_path, monkeypatch, promised):
    """The power is written into room made from the header; a wrong count grows or trims it."""
    expected_frames = streaming._PreparedSignal.expected_frames
    monkeypatch.setattr(
        streaming._PreparedSignal,
        "expected_frames",
        lambda signal, frames: int(promised * expected_frames(signal, frames)),
    )
    extractor = extractor_of("seed", variable=True, deltas=False)
    path = write_audio(tmp_path / "clip.wav", tone(44100, 3.3, 2), 44100)
    assert_streamed_equals_whole_file(extractor, path)


@pytest.mark.parametrize("preset", STREAMED_PRESETS)
@pytest.mark.parametrize("frames", [1, 100, 1023, 1025, 2049])
def test_clips_shorter_than_a_frame_or_its_padding_equal_the_whole_file_path(
    tmp_path, preset, frames
):
    extractor = extractor_of(preset, variable=True, deltas=False)
    sr = extractor.params.sr
    path = write_audio(tmp_path / "clip.wav", tone(sr, frames / sr, 2), sr)
    assert_streamed_equals_whole_file(extractor, path, block_seconds=256 / sr)


@pytest.mark.parametrize("preset", STREAMED_PRESETS)
@pytest.mark.parametrize("seconds", [0.7, 7.3], ids=["padded", "trimmed"])
def test_fixed_length_features_equal_the_whole_file_path(tmp_path, preset, seconds):
    extractor = extractor_of(preset, variable=False, deltas=PRESETS[preset]["deltas"])
    path = write_audio(tmp_path / "clip.flac", tone(44100, seconds, 2), 44100, container="FLAC")
    assert_streamed_equals_whole_file(extractor, path)


def test_bytes_and_silence_stream_as_the_whole_file_path(tmp_path):
    extractor = extractor_of("seed", variable=True, deltas=False)
    path = write_audio(tmp_path / "silence.wav", np.zeros((30000, 2), np.float32), 44100)
    assert_streamed_equals_whole_file(extractor, path)
    assert_streamed_equals_whole_file(extractor, path.read_bytes())


@pytest.mark.parametrize("max_duration", [None, 1.3, 0.0])
def test_decoded_blocks_are_the_decoded_signal(tmp_path, max_duration):
    path = write_audio(tmp_path / "clip.wav", tone(44100, 2.2, 3), 44100, subtype="PCM_24")
    if max_duration == 0.0:
        with pytest.raises(AudioError, match="no audio frames"):
            decode(path, max_duration=max_duration)
        with (
            pytest.raises(AudioError, match="no audio frames"),
            decode_blocks(path, block_seconds=0.3, max_duration=max_duration) as audio,
        ):
            list(audio.blocks)
        return
    y, info = decode(path, max_duration=max_duration)
    with decode_blocks(path, block_seconds=0.3, max_duration=max_duration) as audio:
        blocks = list(audio.blocks)
    assert audio.info == info
    assert {len(block) for block in blocks[:-1]} == {round(0.3 * 44100)}
    np.testing.assert_array_equal(np.concatenate(blocks), y)


def write_nan_after_the_first_block(path):
    samples = tone(22050, 2.0, 2)
    samples[-10, 1] = np.nan
    return write_audio(path, samples, 22050, subtype="FLOAT")


@pytest.mark.parametrize(
    ("write", "message"),
    [
        (lambda path: path.write_bytes(b""), "empty file"),
        (lambda path: path.write_bytes(b"not audio"), "not decodable audio"),
        (lambda path: write_audio(path, np.zeros((0, 1), np.float32), 22050), "no audio frames"),
        (write_nan_after_the_first_block, "non-finite samples"),
    ],
    ids=["empty", "not-audio", "no-frames", "nan"],
)
def test_streaming_raises_what_decode_raises(tmp_path, write, message):
    path = tmp_path / "clip.wav"
    write(path)
    with pytest.raises(AudioError, match=message) as from_decode:
        decode(path)
    extractor = extractor_of("seed", variable=True, deltas=False)
    with pytest.raises(AudioError, match=message) as from_stream:
        stream_features(extractor, path, block_seconds=BLOCK_SECONDS)
    assert str(from_stream.value) == str(from_decode.value)


def test_a_missing_file_is_reported_as_decode_reports_it(tmp_path):
    extractor = extractor_of("seed", variable=True, deltas=False)
    with pytest.raises(AudioError, match="file not found"):
        stream_features(extractor, tmp_path / "missing.wav")


@pytest.mark.parametrize("pad_mode", EDGE_PAD_MODES)
@pytest.mark.parametrize("hop_length", [80, 64, 40, 17])
def test_every_length_modulo_the_hop_pads_the_end_as_the_whole_file_path(
    tmp_path, pad_mode, hop_length
):
    # short frames, so that the samples left after the last whole block take every count;
    # a hop longer than a frame skips samples between frames
    values = {**PRESETS["seed"], "duration": None, "sr": 8000, "n_fft": 64, "win_length": 64,
              "hop_length": hop_length, "n_mels": 8, "fmax": 4000.0,
              "pad_mode": pad_mode}  # fmt: skip
    extractor = FeatureExtractor(Frontend.build(FeatureParams.from_dict(values)))
    for frames in range(1000, 1000 + hop_length + 1):
        path = write_audio(tmp_path / f"{frames}.wav", tone(8000, frames / 8000, seed=frames), 8000)
        assert_streamed_equals_whole_file(extractor, path, block_seconds=0.03)


def test_centring_with_a_padding_of_the_whole_signal_is_refused():
    values = {**PRESETS["seed"], "duration": None, "pad_mode": "wrap"}
    extractor = FeatureExtractor(Frontend.build(FeatureParams.from_dict(values)))
    with pytest.raises(ValueError, match="wrap"):
        stream_features(extractor, "unread.wav")
