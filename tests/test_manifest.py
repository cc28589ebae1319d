"""Layout adapters: which clips a dataset has, in what order, with what metadata."""

import os
import shutil

import numpy as np
import pandas as pd
import pytest
from conftest import make_esc50, tone, write_audio

from melstore.errors import ConfigError
from melstore.pipeline import demo
from melstore.pipeline.manifest import ESCAPES_ROOT, NO_STAT, NOT_FOUND, build_manifest
from melstore.pipeline.plan import load_manifest


def test_urbansound8k_follows_the_csv_and_keeps_every_column(demo_root):
    manifest = build_manifest(demo_root, "urbansound8k")
    csv = pd.read_csv(demo_root / "metadata/UrbanSound8K.csv")

    assert list(manifest.table["clip_id"]) == [n.removesuffix(".wav") for n in csv.slice_file_name]
    assert manifest.csv_columns == list(csv.columns)
    first = manifest.table.iloc[0]
    assert first["path"] == f"audio/fold{first['fold']}/{first['slice_file_name']}"
    assert (manifest.table["problem"] == "").all()
    assert manifest.unlisted == []


def test_demo_manifest_is_known_before_the_files_exist_and_matches_disk(demo_root):
    planned = load_manifest(
        {"root": "not-written-yet/resources/demo", "layout": "urbansound8k", "metadata": None}
    )
    on_disk = build_manifest(demo_root, "urbansound8k")
    pd.testing.assert_frame_equal(planned.table, on_disk.table)
    planned_columns, on_disk_columns = planned.store_columns(), on_disk.store_columns()
    assert list(planned_columns) == list(on_disk_columns)
    for name, values in planned_columns.items():
        np.testing.assert_array_equal(values, on_disk_columns[name])


def test_urbansound8k_reports_missing_and_unlisted_files(tmp_path, demo_root):
    shutil.copytree(demo_root, tmp_path, dirs_exist_ok=True)
    first, second = sorted((tmp_path / "audio").rglob("*.wav"))[:2]
    first.unlink()
    extra = write_audio(tmp_path / "audio/fold1/999-9-0-0.wav", tone(8000, 0.5), 8000)

    manifest = build_manifest(tmp_path, "urbansound8k")

    problems = dict(zip(manifest.table["clip_id"], manifest.table["problem"], strict=True))
    assert problems[first.stem] == NOT_FOUND
    assert problems[second.stem] == ""
    assert manifest.unlisted == [extra.relative_to(tmp_path).as_posix()]
    assert extra.stem not in problems


def test_esc50_layout(tmp_path):
    rows = make_esc50(tmp_path)
    manifest = build_manifest(tmp_path, "esc50")
    assert list(manifest.table["path"]) == [f"audio/{r['filename']}" for r in rows]
    assert list(manifest.table["clip_id"]) == [r["filename"][:-4] for r in rows]
    assert manifest.csv_columns == list(rows[0])
    assert manifest.table["esc10"].dtype == bool


def test_folder_layout_labels_by_parent_and_joins_an_optional_csv(tmp_path):
    for rel in ["dog/b.wav", "dog/a.flac", "cat/x.ogg", "cat/sub/y.WAV", "top.aiff"]:
        container = {"flac": "FLAC", "ogg": "OGG", "aiff": "AIFF"}.get(rel.rsplit(".")[-1], "WAV")
        subtype = "VORBIS" if container == "OGG" else "PCM_16"
        write_audio(tmp_path / rel, tone(16000, 0.3), 16000, container=container, subtype=subtype)
    (tmp_path / "notes.txt").write_text("not audio")
    (tmp_path / "dog/._b.wav").write_bytes(b"macOS resource fork")

    plain = build_manifest(tmp_path, "folder")
    assert list(plain.table["path"]) == [
        "cat/sub/y.WAV", "cat/x.ogg", "dog/a.flac", "dog/b.wav", "top.aiff",
    ]  # fmt: skip
    assert list(plain.table["label"]) == ["sub", "cat", "dog", "dog", ""]
    assert list(plain.table["clip_id"]) == list(plain.table["path"])

    csv = tmp_path.parent / f"{tmp_path.name}-meta.csv"
    pd.DataFrame({"path": ["dog/a.flac", "gone.wav"], "speaker": ["s1", "s2"]}).to_csv(
        csv, index=False
    )
    joined = build_manifest(tmp_path, "folder", metadata=csv).table.set_index("path")
    assert joined.loc["dog/a.flac", "speaker"] == "s1"
    assert pd.isna(joined.loc["dog/b.wav", "speaker"])
    assert joined.loc["gone.wav", "problem"] == NOT_FOUND

    # the CSV's label where it gives one (as text), else the folder's name, else unlabelled
    csv.write_text("path,label\ndog/a.flac,3\ndog/b.wav,\ngone.wav,4\n")
    labelled = build_manifest(tmp_path, "folder", metadata=csv).table.set_index("path")["label"]
    assert labelled.to_dict() == {
        "cat/sub/y.WAV": "sub", "cat/x.ogg": "cat", "dog/a.flac": "3", "dog/b.wav": "dog",
        "gone.wav": "4", "top.aiff": "",
    }  # fmt: skip


def test_paths_escaping_the_root_are_refused(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    write_audio(outside / "secret.wav", tone(8000, 0.2), 8000)
    write_audio(root / "ok.wav", tone(8000, 0.2), 8000)
    os.symlink(outside / "secret.wav", root / "link.wav")
    csv = tmp_path / "meta.csv"
    pd.DataFrame({"path": ["../outside/secret.wav", str(outside / "secret.wav")]}).to_csv(
        csv, index=False
    )

    table = build_manifest(root, "folder", metadata=csv).table.set_index("path")

    assert table.loc["link.wav", "problem"] == ESCAPES_ROOT
    assert table.loc["../outside/secret.wav", "problem"] == ESCAPES_ROOT
    assert table.loc[str(outside / "secret.wav"), "problem"] == ESCAPES_ROOT
    assert table.loc["ok.wav", "problem"] == ""


def row_stats(root, manifest):
    """Each row's (size, mtime_ns) as the manifest has it, and as os.stat gives it now."""
    recorded, expected = [], []
    table = manifest.table
    for row, (path, problem) in enumerate(zip(table["path"], table["problem"], strict=True)):
        recorded.append(tuple(manifest.file_stats[row].tolist()))
        stat = None if problem else (root / path).stat()
        expected.append(NO_STAT if stat is None else (stat.st_size, stat.st_mtime_ns))
    return recorded, expected


@pytest.mark.parametrize("layout", ["urbansound8k", "folder", "folder with a CSV"])
def test_each_row_has_its_own_files_size_and_mtime(tmp_path, demo_root, layout):
    """CSV order is not listing order: a row's stats must still be its own file's."""
    root = tmp_path / "data"
    shutil.copytree(demo_root, root)
    files = sorted((root / "audio").rglob("*.wav"))
    files[0].unlink()  # a CSV row whose file is missing
    os.symlink(demo_root / "metadata/UrbanSound8K.csv", files[1].with_suffix(".x.wav"))
    write_audio(files[2], tone(8000, 0.9), 8000)  # another size than its neighbours
    metadata = None
    if layout == "folder with a CSV":
        metadata = tmp_path / "meta.csv"
        paths = [f.relative_to(root).as_posix() for f in files[::-1]] + ["audio/none.wav"]
        pd.DataFrame({"path": paths}).to_csv(metadata, index=False)
    manifest = build_manifest(root, layout.split()[0], metadata=metadata)

    recorded, expected = row_stats(root, manifest)
    assert recorded == expected
    assert NO_STAT in recorded and len(set(recorded)) > len(recorded) // 2


@pytest.mark.parametrize(
    ("csv_text", "message"),
    [
        ("slice_file_name,fold\na.wav,1\na.wav,2\n", "duplicate clip id 'a'"),
        ("name,fold\na.wav,1\n", "lacks the column.*slice_file_name"),
        ("slice_file_name,fold,peak_db\na.wav,1,3\n", "column .peak_db. is a column melstore"),
    ],
)
def test_bad_metadata_is_a_config_error(tmp_path, csv_text, message):
    (tmp_path / "metadata").mkdir()
    (tmp_path / "metadata/UrbanSound8K.csv").write_text(csv_text)
    with pytest.raises(ConfigError, match=message):
        build_manifest(tmp_path, "urbansound8k")


def test_missing_root_and_csv_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="dataset.root"):
        build_manifest(tmp_path / "nope", "folder")
    with pytest.raises(ConfigError, match="metadata CSV not found"):
        build_manifest(tmp_path, "esc50")


def test_demo_generation_is_byte_reproducible(tmp_path):
    a, b = tmp_path / "a" / demo.ROOT, tmp_path / "b" / demo.ROOT
    demo.write(a)
    demo.write(b)  # a float WAV's PEAK chunk would hold the write time
    files = sorted(p.relative_to(a) for p in a.rglob("*.*"))
    assert len(files) == len(demo.relative_paths())
    for rel in files:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel


@pytest.mark.parametrize("place", ["data", "resources", "demo", "resources/demo/audio"])
def test_the_demo_generator_refuses_any_folder_but_its_own(tmp_path, place):
    with pytest.raises(ConfigError, match=f"the demo is written only to a {demo.ROOT} folder"):
        demo.write(tmp_path / place)
    assert list(tmp_path.rglob("*")) == []


def test_the_demo_generator_never_writes_over_other_data(tmp_path):
    root = tmp_path / demo.ROOT
    mine = write_audio(root / "audio/fold1/mine.wav", tone(8000, 0.5), 8000)
    before = mine.read_bytes()
    with pytest.raises(ConfigError, match=r"holds 1 file\(s\) that are not the demo's, e.g. "):
        demo.write(root)
    assert [p for p in root.rglob("*") if p.is_file()] == [mine]
    assert mine.read_bytes() == before
