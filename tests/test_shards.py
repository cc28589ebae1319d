"""Shard assignment: bounded, deterministic, and stable when files come and go."""

import pytest

from melstore.pipeline.shards import assign_shards, key_values

IDS = [f"{i}-{i % 10}-0-{i % 7}" for i in range(3000)]


def changed_shards(before: dict, after: dict) -> set:
    """Shards of ``after`` that did not exist with the same rows' ids in ``before``."""
    return {name for name in after if name not in before or before[name] != after[name]}


def as_ids(shards, ids):
    return {name: [ids[row] for row in rows] for name, rows in shards.items()}


def test_every_clip_in_exactly_one_shard_of_bounded_size():
    shards = assign_shards(IDS, 200)
    rows = sorted(row for members in shards.values() for row in members)
    assert rows == list(range(len(IDS)))
    assert max(map(len, shards.values())) <= 200
    assert len(shards) < 3 * len(IDS) / 200  # not fragmented


def test_assignment_does_not_depend_on_manifest_order():
    forward = as_ids(assign_shards(IDS, 200), IDS)
    backward = as_ids(assign_shards(IDS[::-1], 200), IDS[::-1])
    assert {k: sorted(v) for k, v in forward.items()} == {k: sorted(v) for k, v in backward.items()}


@pytest.mark.parametrize("new_id", [f"new-{i}" for i in range(25)])
def test_adding_a_file_changes_at_most_two_shards(new_id):
    before = as_ids(assign_shards(IDS, 200), IDS)
    ids = [*IDS, new_id]
    after = as_ids(assign_shards(ids, 200), ids)
    assert 1 <= len(changed_shards(before, after)) <= 2


@pytest.mark.parametrize("removed", [0, 17, 1234, 2999])
def test_removing_a_file_changes_one_shard(removed):
    before = as_ids(assign_shards(IDS, 200), IDS)
    ids = IDS[:removed] + IDS[removed + 1 :]
    after = as_ids(assign_shards(ids, 200), ids)
    assert len(changed_shards(before, after)) == 1


def test_shard_size_one_gives_one_clip_per_shard():
    shards = assign_shards(IDS[:300], 1)
    assert len(shards) == 300
    assert all(len(rows) == 1 for rows in shards.values())


def test_small_dataset_is_one_shard_and_empty_is_none():
    [(name, rows)] = assign_shards(IDS[:5], 200).items()
    assert name == "s" and sorted(rows) == [0, 1, 2, 3, 4]
    assert assign_shards([], 200) == {}


@pytest.mark.parametrize("shard_size", [1, 7, 200, 5000])
def test_shards_end_to_end_list_the_rows_in_one_key_order_at_every_shard_size(shard_size):
    rows = [row for members in assign_shards(IDS, shard_size).values() for row in members]
    keys = key_values([IDS[row] for row in rows])
    assert sorted(rows) == list(range(len(IDS))) and (keys[1:] >= keys[:-1]).all()
