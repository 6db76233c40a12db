"""Unit tests of arcext.versions: the one version ordering (numeric, missing components as 0)."""

from __future__ import annotations

import pytest

from arcext.versions import major, newer, newest, same_version, version_key


@pytest.mark.parametrize(
    ("candidate", "current"),
    [("1.10", "1.9"), ("1.10.0", "1.9.9"), ("2.0", "1.99"), ("1.0.0.1", "1.0"), ("10.0", "9.0")],
)
def test_newer_compares_numerically(candidate: str, current: str) -> None:
    assert newer(candidate, current)
    assert not newer(current, candidate)


@pytest.mark.parametrize(("a", "b"), [("1.10", "1.10.0"), ("1.0", "1.0.0.0"), ("2", "2.0")])
def test_missing_components_count_as_zero(a: str, b: str) -> None:
    assert same_version(a, b)
    assert not newer(a, b)
    assert not newer(b, a)
    assert version_key(a)[:2] == version_key(b)[:2]


def test_a_version_is_not_newer_than_itself() -> None:
    assert not newer("1.2.3", "1.2.3")
    assert same_version("1.2.3", "1.2.3")
    assert not same_version("1.2.3", "1.2.4")


def test_sorting_agrees_with_newer() -> None:
    versions = ["1.10.0", "1.9", "2.0", "1.10", "1.2.3", "1.2"]
    ordered = sorted(versions, key=version_key)
    assert ordered == ["1.2", "1.2.3", "1.9", "1.10", "1.10.0", "2.0"]
    for earlier, later in zip(ordered, ordered[1:], strict=False):
        assert not newer(earlier, later)


def test_equal_versions_sort_next_to_each_other_by_text() -> None:
    # 1.10 == 1.10.0: neither sorts after 1.11, both after 1.9
    ordered = sorted(["1.11", "1.10.0", "1.9", "1.10"], key=version_key)
    assert ordered == ["1.9", "1.10", "1.10.0", "1.11"]


def test_unparseable_versions_sort_first_and_never_raise() -> None:
    ordered = sorted(["1.0", "not-a-version", "0.0.1", "also bad"], key=version_key)
    assert ordered[:2] == ["also bad", "not-a-version"]
    assert ordered[2:] == ["0.0.1", "1.0"]
    assert newer("0.0.1", "not-a-version")
    assert not newer("not-a-version", "0.0.1")


def test_newest() -> None:
    assert newest(["1.9", "1.10", "1.2"]) == "1.10"
    assert newest(["2.0", "10.0", "9.9.9"]) == "10.0"
    assert newest(["garbage", "0.0.1"]) == "0.0.1"
    assert newest(["1.0"]) == "1.0"
    assert newest([]) is None


def test_major() -> None:
    assert major("1.10.3") == "1"
    assert major("12.0") == "12"
    assert major("3") == "3"
