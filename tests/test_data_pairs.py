"""Same-person pair building (the PATN rule) and its person-id rules."""

from __future__ import annotations

import numpy as np
import pytest

from emca.data.pairs import build_pairs, person_id_rule
from emca.errors import DataError


def full_body() -> np.ndarray:
    return np.tile(np.array([[10, 5]], dtype=np.int64), (18, 1))


def test_person_id_rules() -> None:
    deepfashion = person_id_rule("deepfashion")
    assert deepfashion("fashionMENDenimid0000008001_1front.jpg") == "fashionMENDenimid0000008001"
    assert deepfashion("fashionWOMENDressesid0000262902_3back.jpg") == "fashionWOMENDressesid0000262902"
    market = person_id_rule("market")
    assert market("0002_c1s1_000451_03.jpg") == "0002"
    assert market("0000_c1s1_000151_01.jpg") is None
    assert market("-1_c1s1_000401_03.jpg") is None
    assert person_id_rule("prefix:-")("anna-beach-01.jpg") == "anna"
    assert person_id_rule(r"regex:img_(\d+)_")("img_42_front.png") == "42"


def test_person_id_rule_errors() -> None:
    with pytest.raises(ValueError, match="Unknown person-id rule 'clothes'"):
        person_id_rule("clothes")
    with pytest.raises(ValueError, match="exactly one capture group, it has 0"):
        person_id_rule(r"regex:\d+")
    with pytest.raises(ValueError, match="invalid regular expression"):
        person_id_rule("regex:(")
    with pytest.raises(DataError, match="'front.jpg' has no '_'"):
        person_id_rule("deepfashion")("front.jpg")
    with pytest.raises(DataError, match="'abc_c1.jpg' does not start with a Market-1501 person id"):
        person_id_rule("market")("abc_c1.jpg")
    with pytest.raises(DataError, match="'photo.jpg' does not match"):
        person_id_rule(r"regex:(\w+)-")("photo.jpg")


def test_build_pairs_follows_the_patn_rule() -> None:
    annotations = {name: full_body() for name in ("b_2.jpg", "a_1.jpg", "b_1.jpg", "a_2.jpg", "a_3.jpg", "c_1.jpg")}
    no_left_hip = full_body()
    no_left_hip[11] = -1
    annotations["a_4.jpg"] = no_left_hip
    no_right_shoulder = full_body()
    no_right_shoulder[2] = -1
    annotations["b_3.jpg"] = no_right_shoulder
    missing_nose = full_body()
    missing_nose[0] = -1
    annotations["c_2.jpg"] = missing_nose  # other joints may be missing
    pairs = build_pairs(annotations, person_id_rule("deepfashion"))
    expected = [
        (x, y)
        for group in (["a_1.jpg", "a_2.jpg", "a_3.jpg"], ["b_1.jpg", "b_2.jpg"], ["c_1.jpg", "c_2.jpg"])
        for x in group
        for y in group
        if x != y
    ]
    assert sorted(pairs) == sorted(expected)
    assert len(pairs) == 3 * 2 + 2 + 2
    assert pairs == build_pairs(dict(reversed(list(annotations.items()))), person_id_rule("deepfashion"))


def test_market_distractors_are_dropped() -> None:
    annotations = {
        name: full_body()
        for name in ("0000_c1_1.jpg", "0000_c2_1.jpg", "-1_c1_1.jpg", "-1_c3_1.jpg", "0007_c1_1.jpg", "0007_c2_1.jpg")
    }
    assert build_pairs(annotations, person_id_rule("market")) == [
        ("0007_c1_1.jpg", "0007_c2_1.jpg"),
        ("0007_c2_1.jpg", "0007_c1_1.jpg"),
    ]
