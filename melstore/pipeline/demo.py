"""A small synthetic dataset in the UrbanSound8K layout, generated from a fixed seed.

Six classes of clearly different sounds, eight clips each over four folds,
written in a mix of formats (PCM 8/16/24-bit, float, IMA ADPCM,
WAVE_FORMAT_EXTENSIBLE; 8-96 kHz; mono and stereo), with durations from
0.5 s to 4 s and one clip shorter than the seed's n_fft.

The file list is known before anything is written (:func:`plan`), so the
workflow can build its manifest at parse time and let a rule write the files.
The generator writes only into its own folder, :data:`ROOT` of a working
directory, and refuses any other place: a user's dataset is never written.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from melstore.errors import ConfigError
from melstore.features.audio import write_audio
from melstore.files import atomic_path
from melstore.pipeline.manifest import LAYOUT_CSV

# The demo's own folder, relative to the working directory: the only place it is written.
ROOT = Path("resources/demo")
SEED = 20150826
CLASSES = ["tone", "sweep", "noise", "clicks", "hum", "chirps"]
CLIPS_PER_CLASS = 8
N_FOLDS = 4
CSV_PATH = LAYOUT_CSV["urbansound8k"]
# (container, subtype, sample rate, channels), cycled over the clips
FORMATS = [
    ("WAV", "PCM_16", 44100, 2),
    ("WAV", "PCM_24", 48000, 2),
    ("WAV", "FLOAT", 96000, 1),
    ("WAV", "PCM_U8", 8000, 1),
    ("WAVEX", "PCM_16", 22050, 2),
    ("WAV", "IMA_ADPCM", 16000, 1),
    ("WAV", "PCM_16", 11025, 1),
    ("WAVEX", "PCM_24", 32000, 2),
    ("WAV", "FLOAT", 24000, 2),
]
SHORT_CLIP_SECONDS = 0.05  # below 2048 samples at 22050 Hz


def plan() -> pd.DataFrame:
    """The clips to generate: the UrbanSound8K CSV columns plus format columns."""
    rng = np.random.default_rng(SEED)
    rows = []
    for class_id, name in enumerate(CLASSES):
        for occurrence in range(CLIPS_PER_CLASS):
            i = class_id * CLIPS_PER_CLASS + occurrence
            fs_id = 100000 + 7919 * i % 90000
            duration = round(float(rng.uniform(0.5, 4.0)), 3)
            if i == 5:
                duration = SHORT_CLIP_SECONDS
            container, subtype, sr, channels = FORMATS[(i * 5) % len(FORMATS)]
            rows.append(
                {
                    "slice_file_name": f"{fs_id}-{class_id}-0-{occurrence}.wav",
                    "fsID": fs_id,
                    "start": 0.0,
                    "end": duration,
                    "salience": 1 + occurrence % 2,
                    "fold": 1 + occurrence % N_FOLDS,
                    "classID": class_id,
                    "class": name,
                    "container": container,
                    "subtype": subtype,
                    "sr": sr,
                    "channels": channels,
                }
            )
    return pd.DataFrame(rows)


def csv_table() -> pd.DataFrame:
    """The dataset's own metadata CSV, exactly as :func:`write` saves it."""
    return plan().drop(columns=["container", "subtype", "sr", "channels"])


def relative_paths() -> list[str]:
    """Every file the demo dataset consists of, relative to its root."""
    table = plan()
    audio = "audio/fold" + table["fold"].astype(str) + "/" + table["slice_file_name"]
    return [CSV_PATH, *audio]


def is_demo_root(root: str | Path) -> bool:
    """Whether ``root`` is the demo's own folder: a ``resources/demo`` folder."""
    return Path(root).resolve().parts[-2:] == ROOT.parts


def write(root: str | Path = ROOT) -> None:
    """Generate the demo dataset under ``root`` (each file written atomically).

    Raises
    ------
    ConfigError
        If ``root`` is not a ``resources/demo`` folder, or holds files the demo
        does not consist of: the generator never writes over other data.
    """
    root = Path(root)
    if not is_demo_root(root):
        raise ConfigError(f"the demo is written only to a {ROOT} folder, not to {root}")
    own = {root / path for path in relative_paths()}
    foreign = sorted(p for p in root.rglob("*") if p.is_file() and _written_by(p) not in own)
    if foreign:
        raise ConfigError(
            f"{root} holds {len(foreign)} file(s) that are not the demo's, e.g. {foreign[0]}; "
            "the demo is not written over other data"
        )
    table = plan()
    for clip_number, clip in enumerate(table.itertuples(index=False)):
        samples = synthesize(
            clip.classID,
            sr=clip.sr,
            duration=clip.end,
            channels=clip.channels,
            seed=SEED + clip_number,
        )
        write_audio(
            root / "audio" / f"fold{clip.fold}" / clip.slice_file_name,
            samples,
            clip.sr,
            container=clip.container,
            subtype=clip.subtype,
        )
    with atomic_path(root / CSV_PATH) as tmp:
        csv_table().to_csv(tmp, index=False)


def _written_by(path: Path) -> Path:
    """The file a temporary sibling (``.name.tmpPID``, left by a killed run) was written for."""
    name, tmp, _ = path.name.partition(".tmp")
    return path.with_name(name[1:]) if tmp and name.startswith(".") else path


def synthesize(class_id: int, *, sr: int, duration: float, channels: int, seed: int) -> np.ndarray:
    """One clip of class ``class_id``: float32 (frames, channels) in [-1, 1]."""
    rng = np.random.default_rng(seed)
    t = np.arange(max(1, round(duration * sr))) / sr
    kind = CLASSES[class_id]
    if kind == "tone":
        y = np.sin(2 * np.pi * rng.uniform(400, 900) * t)
    elif kind == "sweep":  # up and down between f0 and f1, so any excerpt covers the range
        f0, f1, period = rng.uniform(150, 300), rng.uniform(2500, 3500), rng.uniform(0.4, 0.6)
        triangle = 1 - np.abs(2 * (t / period % 1) - 1)
        y = np.sin(2 * np.pi * np.cumsum(f0 + (f1 - f0) * triangle) / sr)
    elif kind == "noise":
        y = rng.standard_normal(len(t)) * 0.5
    elif kind == "clicks":
        period = 1 / rng.uniform(5, 12)
        y = np.exp(-(t % period) * 300) * np.sign(rng.standard_normal(len(t)))
    elif kind == "hum":
        f0 = rng.choice([50.0, 60.0])
        y = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 6))
    else:  # chirps: short bursts of 2400 +- 300 Hz, frequency-modulated at 18 Hz
        swing = 300 / (2 * np.pi * 18)  # phase deviation (cycles) giving +-300 Hz
        carrier = np.sin(2 * np.pi * (2400 * t + swing * np.sin(2 * np.pi * 18 * t)))
        y = carrier * (np.sin(2 * np.pi * rng.uniform(3, 6) * t) > 0.3)
    y = y / max(np.max(np.abs(y)), 1e-9) * rng.uniform(0.1, 0.8)
    # a background at -40 dBFS, above the 8-bit and ADPCM noise floors, so that the
    # file format does not decide how a clip's quiet parts look
    y = y + rng.standard_normal(len(t)) * 0.01
    stereo = np.stack([y, y * rng.uniform(0.6, 1.0)], axis=1)
    return np.clip(stereo[:, :channels], -1, 1).astype(np.float32)
