"""Groups, roles and the one seeded equal-size sampler shared by `ngrams` and `embed-cluster`."""

from __future__ import annotations

import polars as pl
import pytest

from smm4h_cli.analysis.groups import Group, draw, equal_size_indices, equal_size_sample, groups_from_frames, infer_roles, role_of


def _three() -> list[Group]:
    return [
        Group("train/label 0", [f"t{i}" for i in range(20)], [f"id-t{i}" for i in range(20)]),
        Group("train/label 1", [f"p{i}" for i in range(12)]),
        Group("synthetic", [f"s{i}" for i in range(9)]),
    ]


# The positions below were computed with the two samplers that existed before they became one:
# `analysis.ngrams.equal_size_sample` and `analysis.clustering.sample_indices` (which agreed),
# and `analysis.clustering._rng(seed, name, 1)` for the Vendi subsample. Every documented table
# and figure depends on them staying exactly these.
OLD_EQUAL_SIZE = [
    (6, 0, 6, [[2, 3, 13, 16, 18, 19], [0, 2, 6, 8, 9, 10], [0, 2, 4, 5, 6, 7]]),
    (1000, 5, 9, [[0, 3, 10, 12, 13, 15, 17, 18, 19], [0, 1, 2, 4, 5, 7, 8, 9, 10], [0, 1, 2, 3, 4, 5, 6, 7, 8]]),
]


@pytest.mark.parametrize("sample, seed, size, expected", OLD_EQUAL_SIZE)
def test_sampler_draws_exactly_what_both_old_samplers_drew(sample, seed, size, expected):
    groups = _three()
    picks, got_size = equal_size_indices(groups, sample, seed)
    assert got_size == size and [p.tolist() for p in picks] == expected
    sampled, got_size = equal_size_sample(groups, sample, seed)
    assert got_size == size
    assert [[int(t[1:]) for t in g.texts] for g in sampled] == expected
    assert [g.name for g in sampled] == [g.name for g in groups]
    assert sampled[0].ids == [f"id-t{i}" for i in expected[0]] and sampled[1].ids is None


@pytest.mark.parametrize(
    "name, n, size, expected",
    [("train/label 0", 20, 6, [1, 8, 10, 12, 14, 18]), ("real positives", 24, 6, [2, 6, 9, 16, 19, 22]), ("synthetic", 9, 4, [4, 5, 6, 7])],
)
def test_second_stream_draws_what_the_old_vendi_subsample_drew(name, n, size, expected):
    assert draw(n, size, 3, name, stream=1).tolist() == expected


def test_sample_zero_keeps_every_post():
    groups = _three()
    picks, size = equal_size_indices(groups, 0, seed=0)
    assert size is None and [p.tolist() for p in picks] == [list(range(len(g.texts))) for g in groups]
    sampled, size = equal_size_sample(groups, 0, seed=0)
    assert size is None and sampled == groups


def test_equal_size_samples_are_seeded_and_independent_of_other_groups():
    a = Group("a", [f"post {i}" for i in range(50)])
    b = Group("b", [f"text {i}" for i in range(30)])
    c = Group("c", [f"more {i}" for i in range(40)])
    (sa, sb), size = equal_size_sample([a, b], 1000, seed=3)
    assert size == 30 and len(sa.texts) == len(sb.texts) == 30
    (sa2, _, _), _ = equal_size_sample([a, b, c], 1000, seed=3)
    assert sa2.texts == sa.texts
    (sa3, _), _ = equal_size_sample([a, b], 1000, seed=4)
    assert sa3.texts != sa.texts


def test_the_sample_follows_the_group_name_not_the_file():
    """The documented rule: the same posts under two names get two different samples."""
    texts = [f"post {i}" for i in range(50)]
    (one,), _ = equal_size_sample([Group("train", texts)], 10, seed=0)
    (other,), _ = equal_size_sample([Group("task5/train", texts)], 10, seed=0)
    assert one.texts != other.texts


def test_groups_from_frames_by_label():
    frame = pl.DataFrame({"id": [1, 2, 3], "text": ["a", "b", "c"], "label": [1, 0, 1]})
    single = pl.DataFrame({"text": ["x", "y"], "label": [1, 1]})
    groups = groups_from_frames([("train", frame), ("gen", single)], by_label=True)
    assert [(g.name, g.texts, g.ids) for g in groups] == [
        ("train/label 0", ["b"], ["2"]), ("train/label 1", ["a", "c"], ["1", "3"]), ("gen", ["x", "y"], None),
    ]
    assert [g.name for g in groups_from_frames([("train", frame)], by_label=False)] == ["train"]


@pytest.mark.parametrize(
    "name, role",
    [("gen", "synthetic"), ("gen/label 1", "synthetic"), ("train/label 1", "real positives"), ("pos", "real positives"),
     ("train/label 0", "real negatives"), ("other", "real"), ("general", "real")],
)
def test_role_of(name, role):
    assert role_of(name, synthetic=("gen",), positives=("pos",)) == role


def test_infer_roles():
    real = pl.DataFrame({"text": ["a", "b"], "label": [0, 1]})
    generated = pl.DataFrame({"text": ["c"], "label": [1], "source": ["synthetic"]})
    positives = pl.DataFrame({"text": ["d"], "label": [1]})
    named = [("train", real), ("gen", generated), ("pos", positives), ("named", positives)]
    assert infer_roles(named, synthetic=["named"]) == (("gen", "named"), ("pos",))


def test_a_missing_source_is_not_synthetic(tmp_path):
    """polars' ``all`` skips nulls: a file of real posts with one synthetic record, or with an
    empty ``source`` column, was classed synthetic and its positives left the realism metrics."""
    from smm4h_cli.io import read_records

    mixed = pl.DataFrame({"text": ["a", "b", "c"], "label": [1, 1, 1], "source": [None, None, "synthetic"]})
    empty_csv = tmp_path / "real.csv"
    empty_csv.write_text("id,text,label,source\n1,hello there,1,\n2,my inhaler is empty,1,\n")
    empty = read_records(empty_csv)
    assert empty["source"].null_count() == empty.height  # the CSV's empty cells read as nulls
    generated = pl.DataFrame({"text": ["d"], "label": [1], "source": ["synthetic"]})
    named = [("mixed", mixed), ("real", empty), ("gen", generated)]
    assert infer_roles(named) == (("gen",), ("mixed", "real"))


def test_a_smaller_new_group_changes_every_sample():
    """What the docs say holds: a file added without changing the common size leaves the others'
    samples alone (test above); one smaller than the others lowers the size, and draws of
    different sizes are not nested, so every sample changes."""
    a = Group("a", [f"post {i}" for i in range(50)])
    b = Group("b", [f"text {i}" for i in range(30)])
    small = Group("small", [f"tiny {i}" for i in range(20)])
    (sa, _), size = equal_size_sample([a, b], 1000, seed=3)
    (sa_small, _, _), smaller = equal_size_sample([a, b, small], 1000, seed=3)
    assert (size, smaller) == (30, 20)
    assert not set(sa_small.texts) <= set(sa.texts)
