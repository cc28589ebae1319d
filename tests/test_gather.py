"""The index job refuses a shard and a listing that disagree, naming the clip."""

import pytest
from conftest import tone, write_audio

from melstore.errors import MelstoreError
from melstore.features.presets import resolve_feature_set
from melstore.pipeline.extract import ShardJob, extract_shard
from melstore.pipeline.gather import plan_gather
from melstore.store.format import Storage, encode_text

PATHS = ["a/one.wav", "b/two.wav"]


@pytest.fixture(scope="module")
def shard(tmp_path_factory):
    """One shard file of two clips, written by the real extraction code."""
    root, work = tmp_path_factory.mktemp("data"), tmp_path_factory.mktemp("work")
    for i, path in enumerate(PATHS):
        write_audio(root / path, tone(16000, 0.5, freq=300 + 200 * i, seed=i), 16000)
    params = resolve_feature_set("seed", {}).to_dict()
    build = {"params": params, "storage": Storage().to_dict(), "versions": {}, "code": ""}
    entries = [(path, path, "") for path in PATHS]
    extract_shard(ShardJob(entries, root, work / "shard.h5", "seed", build, digest="d"))
    return work / "shard.h5"


def listing(paths):
    """The manifest columns of a folder listing of ``paths``, as Manifest.store_columns gives."""
    return {"clip_id": encode_text(paths), "path": encode_text(paths)}


def test_a_listed_clip_in_no_shard_is_named(shard):
    with pytest.raises(MelstoreError, match=r"^clip 'c/three.wav' is in no shard; rerun"):
        plan_gather(listing([*PATHS, "c/three.wav"]), [shard])


def test_a_shard_clip_missing_from_the_listing_is_named(shard):
    with pytest.raises(MelstoreError, match=r"clip 'b/two.wav' is in a shard but not in the data"):
        plan_gather(listing(PATHS[:1]), [shard], min_success=0.0)


def test_the_rows_follow_the_shard_whatever_the_listing_order(shard):
    metadata = plan_gather(listing(PATHS[::-1]), [shard]).metadata
    assert metadata["clip_id"].tolist() == metadata["path"].tolist()
    assert sorted(metadata["clip_id"].tolist()) == [path.encode() for path in sorted(PATHS)]


def test_a_clip_in_two_shards_is_named(shard):
    with pytest.raises(MelstoreError, match=r"clip 'a/one.wav' is in more than one shard; rerun"):
        plan_gather(listing(PATHS), [shard, shard])


def test_the_rows_map_each_stored_clip_to_its_listed_row(shard):
    """Listed in another order, among clips of other shards, each row keeps its own path."""
    listed = ["0/x.wav", PATHS[1], "1/y.wav", PATHS[0]]
    columns = {"clip_id": encode_text(listed), "path": encode_text([f"p/{c}" for c in listed])}
    with pytest.raises(MelstoreError, match="'0/x.wav' is in no shard"):
        plan_gather(columns, [shard])
    columns = {name: values[[1, 3]] for name, values in columns.items()}
    metadata = plan_gather(columns, [shard]).metadata
    assert [b"p/" + c for c in metadata["clip_id"].tolist()] == metadata["path"].tolist()
