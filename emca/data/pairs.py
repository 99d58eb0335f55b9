"""Building (source, target) pairs from an annotation file, following the PATN rule.

Every ordered pair (a, b), a != b, of images of the same person, after dropping images whose keypoints
miss either hip or either shoulder. Who is who comes from the image name, by a rule chosen by name:

- ``deepfashion``: the name up to its last ``_``
  (``fashionMENDenimid0000008001_1front.jpg`` -> ``fashionMENDenimid0000008001``);
- ``market``: the leading digits before the first ``_`` (``0002_c1s1_000451_03.jpg`` -> ``0002``);
  the distractor ids ``0000`` and ``-1`` are dropped;
- ``prefix:SEP``: the text before the first ``SEP`` (``prefix:-`` maps ``anna-01.jpg`` to ``anna``);
- ``regex:PATTERN``: the single capture group of ``PATTERN`` matched at the start of the name.
"""

from __future__ import annotations

import itertools
import re
from collections import defaultdict
from collections.abc import Callable

import numpy as np

from emca.data.keypoints import REQUIRED_FOR_PAIRS, visible
from emca.errors import DataError

# returns the person's id, or None for an image that belongs to nobody (a Market distractor)
PersonId = Callable[[str], str | None]

PERSON_ID_RULES = ("deepfashion", "market", "prefix:SEP", "regex:PATTERN")
_MARKET_DISTRACTORS = ("0000", "-1")


def _deepfashion_id(name: str) -> str:
    if "_" not in name:
        raise DataError(
            f"Image name '{name}' has no '_'; the deepfashion rule takes the person id before the last '_'."
        )
    return name.rsplit("_", 1)[0]


def _market_id(name: str) -> str | None:
    person = name.split("_", 1)[0]
    if person in _MARKET_DISTRACTORS:
        return None
    if not person.isdigit():
        raise DataError(
            f"Image name '{name}' does not start with a Market-1501 person id (digits, then '_'), "
            "e.g. '0002_c1s1_000451_03.jpg'."
        )
    return person


def person_id_rule(rule: str) -> PersonId:
    """The person-id function for ``rule`` (see the module docstring for the rules); a rule that is not one is a
    ValueError saying why (``emca data pairs`` reports it as ``--person-id``'s)."""
    if rule == "deepfashion":
        return _deepfashion_id
    if rule == "market":
        return _market_id
    if rule.startswith("prefix:"):
        separator = rule[len("prefix:") :]
        if not separator:
            raise ValueError("Person-id rule 'prefix:SEP' needs a separator after the colon, e.g. 'prefix:_'.")

        def prefix_id(name: str) -> str:
            if separator not in name:
                raise DataError(f"Image name '{name}' does not contain the separator {separator!r} of rule '{rule}'.")
            return name.split(separator, 1)[0]

        return prefix_id
    if rule.startswith("regex:"):
        try:
            pattern = re.compile(rule[len("regex:") :])
        except re.error as err:
            raise ValueError(f"Person-id rule '{rule}': invalid regular expression ({err}).") from err
        if pattern.groups != 1:
            raise ValueError(f"Person-id rule '{rule}' must have exactly one capture group, it has {pattern.groups}.")

        def regex_id(name: str) -> str:
            match = pattern.match(name)
            if match is None or match.group(1) is None:
                raise DataError(f"Image name '{name}' does not match the person-id pattern {pattern.pattern!r}.")
            return match.group(1)

        return regex_id
    raise ValueError(f"Unknown person-id rule {rule!r}; expected one of {', '.join(PERSON_ID_RULES)}.")


def build_pairs(annotations: dict[str, np.ndarray], person_id: PersonId) -> list[tuple[str, str]]:
    """All ordered pairs of distinct images of the same person, both showing both hips and shoulders.

    Deterministic: people in sorted id order, each person's images in sorted name order.
    """
    images_by_person: dict[str, list[str]] = defaultdict(list)
    for name in sorted(annotations):
        if not visible(annotations[name])[list(REQUIRED_FOR_PAIRS)].all():
            continue
        person = person_id(name)
        if person is not None:
            images_by_person[person].append(name)
    return [pair for person in sorted(images_by_person) for pair in itertools.permutations(images_by_person[person], 2)]
