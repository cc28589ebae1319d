"""Decoding every format the target datasets contain, refusing non-audio, writing reproducibly."""

import time

import numpy as np
import pytest
import soundfile as sf
import xxhash
from conftest import tone, write_audio

from melstore.errors import AudioError
from melstore.features.audio import decode, downmix, file_checksum, fix_length, resample
from melstore.features.audio import write_audio as write_reproducibly

# (container, subtype, sample rate, channels, tolerance of the decoded samples)
FORMATS = [
    ("WAV", "PCM_U8", 8000, 1, 1e-2),
    ("WAV", "PCM_16", 44100, 2, 1e-4),
    ("WAV", "PCM_24", 48000, 2, 1e-6),
    ("WAV", "PCM_32", 96000, 1, 1e-6),
    ("WAV", "FLOAT", 192000, 2, 0),
    ("WAV", "IMA_ADPCM", 22050, 1, 5e-2),
    ("WAVEX", "PCM_24", 11025, 2, 1e-6),
    ("WAVEX", "FLOAT", 16000, 6, 0),
    ("FLAC", "PCM_16", 32000, 2, 1e-4),
    ("OGG", "VORBIS", 24000, 1, 5e-2),
]


@pytest.mark.parametrize(("container", "subtype", "sr", "channels", "tolerance"), FORMATS)
def test_decode_reads_each_format_as_the_channel_mean(
    tmp_path, container, subtype, sr, channels, tolerance
):
    samples = tone(sr, 0.5, channels)
    path = write_audio(tmp_path / "x.audio", samples, sr, container=container, subtype=subtype)

    y, info = decode(path)

    assert (info.sample_rate, info.channels, info.subtype) == (sr, channels, subtype)
    assert y.dtype == np.float32 and y.ndim == 1
    expected = samples.mean(axis=1)
    if subtype in ("IMA_ADPCM", "VORBIS"):  # lossy codecs: compare energy, not samples
        assert abs(np.sqrt(np.mean(y**2)) - np.sqrt(np.mean(expected**2))) < tolerance
    else:
        np.testing.assert_allclose(y[: len(expected)], expected, atol=tolerance)


def test_decode_truncates_like_librosa_load_duration(tmp_path):
    path = write_audio(tmp_path / "x.wav", tone(11025, 2.0), 11025)
    y, info = decode(path.read_bytes(), max_duration=1.5)
    assert len(y) == int(1.5 * 11025)
    assert info.frames == 2 * 11025 and info.duration == pytest.approx(2.0)


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "empty file"),
        (b"this is not audio at all" * 20, "not decodable audio"),
        (b"RIFF\x24\x00\x00\x00WAVEfmt ", "not decodable audio"),
    ],
)
def test_decode_rejects_non_audio_with_a_one_line_reason(content, reason):
    with pytest.raises(AudioError, match=reason) as err:
        decode(content)
    assert "\n" not in str(err.value)


def test_decode_rejects_non_finite_samples(tmp_path):
    samples = tone(16000, 0.2)
    samples[100] = np.nan
    path = write_audio(tmp_path / "nan.wav", samples, 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match="non-finite"):
        decode(path.read_bytes())


def test_decode_rejects_a_header_without_frames(tmp_path):
    path = write_audio(tmp_path / "empty.wav", np.zeros((0, 1), np.float32), 16000)
    with pytest.raises(AudioError, match="no audio frames"):
        decode(path.read_bytes())


# the formats libsndfile gives a PEAK chunk, which holds the time of writing
FLOAT_FORMATS = [("WAV", "FLOAT"), ("WAV", "DOUBLE"), ("WAVEX", "FLOAT")]


def write_each_float_format(folder, samples):
    for container, subtype in FLOAT_FORMATS:
        path = folder / f"{container}-{subtype}.wav"
        write_reproducibly(path, samples, 24000, container=container, subtype=subtype)


def test_write_audio_gives_the_same_bytes_at_any_time_and_no_peak_chunk(tmp_path):
    samples = tone(24000, 0.2, 2)
    write_each_float_format(tmp_path / "first", samples)
    time.sleep(1.5)  # the PEAK chunk's time of writing counts seconds
    write_each_float_format(tmp_path / "second", samples)
    for container, subtype in FLOAT_FORMATS:
        name = f"{container}-{subtype}.wav"
        first, second = tmp_path / "first" / name, tmp_path / "second" / name
        assert first.read_bytes() == second.read_bytes(), name
        assert b"PEAK" not in first.read_bytes()
        info = sf.info(first)
        assert (info.format, info.subtype, info.samplerate) == (container, subtype, 24000)
        np.testing.assert_array_equal(sf.read(first, dtype="float32")[0], samples)


def test_file_checksum_reports_missing_files_and_streams_whole_files(tmp_path):
    with pytest.raises(AudioError, match="file not found"):
        file_checksum(tmp_path / "missing.wav")
    (tmp_path / "abc").write_bytes(b"abc")
    assert file_checksum(tmp_path / "abc") == "06b05ab6733a618578af5f94892f3950"  # xxh128sum
    data = np.random.default_rng(0).bytes(3_000_001)  # several read blocks
    (tmp_path / "big").write_bytes(data)
    assert file_checksum(tmp_path / "big") == xxhash.xxh3_128(data).hexdigest()


def test_resample_matches_librosa_length_and_values():
    librosa = pytest.importorskip("librosa")
    y = tone(44100, 1.003)[:, 0]
    ours = resample(y, orig_sr=44100, target_sr=22050, res_type="soxr_hq")
    theirs = librosa.resample(y, orig_sr=44100, target_sr=22050, res_type="soxr_hq")
    np.testing.assert_array_equal(ours, theirs)


def test_fix_length_pads_with_zeros_and_trims():
    y = np.arange(1, 4, dtype=np.float32)
    np.testing.assert_array_equal(fix_length(y, 5), [1, 2, 3, 0, 0])
    np.testing.assert_array_equal(fix_length(y, 2), [1, 2])


@pytest.mark.parametrize("channels", [2, 3, 6])
def test_downmix_gives_the_same_bits_as_librosa_to_mono(channels):
    librosa = pytest.importorskip("librosa")
    samples = np.random.default_rng(channels).standard_normal((50001, channels)).astype(np.float32)
    np.testing.assert_array_equal(downmix(samples), librosa.to_mono(samples.T))
