"""Attribute-conditioned prompting (AttrPrompt; Yu et al., 2024): each call fixes one value of
every attribute, so the synthetic set covers the space the paper's posts lacked.

An attribute set maps an attribute's name to its values. The built-in sets are below; a user's
set is a YAML or JSON file of the same shape (``smm4h generate --show-attributes`` prints the
built-in one to start from). Values are drawn so that each attribute's values are spread evenly
over the calls (every value appears once per round of ``len(values)`` calls, in a shuffled order
of its own), and the draw for call ``i`` depends only on the seed and ``i``: a resumed run draws
what the first run drew.
"""

from __future__ import annotations

import random
from pathlib import Path

import yaml

from smm4h_cli.errors import InputError

AttributeSet = dict[str, list[str]]

TASK5_ATTRIBUTES: AttributeSet = {
    "disorder of the child": ["ADHD", "autism spectrum disorder", "delayed speech", "asthma"],
    "child's age": [
        "a baby under one year old",
        "a toddler (1 to 3 years)",
        "a preschooler (3 to 5 years)",
        "a school-age child (6 to 12 years)",
        "a teenager",
    ],
    "poster's voice": [
        "a pregnant mother with an older child",
        "a mother",
        "a father",
        "a single parent",
        "a parent of several children",
    ],
    "situation": [
        "the day of the diagnosis",
        "a visit to the doctor or a specialist",
        "a trip to the emergency room",
        "school or daycare",
        "a therapy session",
        "medication or an inhaler",
        "a milestone or a small win",
        "a hard night at home",
        "comments from family or strangers",
        "insurance, waiting lists or paperwork",
    ],
    "tone": ["proud", "worried", "exhausted", "hopeful", "frustrated", "funny", "matter-of-fact", "grateful"],
    "tweet style": [
        "short and casual, no hashtags",
        "with one or two hashtags",
        "with an emoji",
        "a question to other parents",
        "a reply in a conversation",
        "all lowercase with abbreviations",
    ],
}

TASK6_ATTRIBUTES: AttributeSet = {
    "age stated": ["16", "18", "19", "21", "23", "25", "27", "30", "32", "35", "38", "42", "47", "55", "63"],
    "how the age is stated": [
        "a birthday today (\"I turn N today\")",
        "a plain statement (\"I'm N\")",
        "an age-and-sex tag such as \"25F\" or \"(32M)\"",
        "a birthday tomorrow (\"tomorrow I'll be N\")",
        "\"as an N year old ...\"",
        "the age written in words",
    ],
    "life context": [
        "school or college",
        "work or looking for a job",
        "a doctor's visit or a diagnosis",
        "a medication and its side effects",
        "dating or a relationship",
        "being a parent",
        "money or rent",
        "sport or fitness",
        "a hobby",
        "mental health",
    ],
    "platform": [
        "a tweet (under 280 characters)",
        "a Reddit post (a few sentences in the first person)",
    ],
}

BUILTIN_ATTRIBUTES = {5: TASK5_ATTRIBUTES, 6: TASK6_ATTRIBUTES}


def builtin_attributes(task: int) -> AttributeSet:
    if task not in BUILTIN_ATTRIBUTES:
        raise InputError(f"there are built-in attributes for tasks 5 and 6 only; give --attributes FILE for task {task}.")
    return BUILTIN_ATTRIBUTES[task]


def validate_attributes(data: object, where: str) -> AttributeSet:
    if not isinstance(data, dict) or not data:
        raise InputError(
            f"{where}: expected a mapping from attribute names to lists of values, e.g.\n"
            f"tone: [proud, worried]\nplatform: [a tweet, a Reddit post]"
        )
    out: AttributeSet = {}
    for name, values in data.items():
        if not isinstance(values, list) or not values or not all(isinstance(v, (str, int, float)) and str(v).strip() for v in values):
            raise InputError(f"{where}: attribute '{name}' needs a non-empty list of non-empty values; got {values!r}.")
        if len(set(map(str, values))) != len(values):
            raise InputError(f"{where}: attribute '{name}' lists a value twice; each value once.")
        out[str(name)] = [str(v) for v in values]
    return out


def load_attributes(path: str | Path) -> AttributeSet:
    """An attribute set from a YAML or JSON file."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such attributes file. Give a YAML or JSON mapping of attribute -> list of values.")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise InputError(f"{p}: not valid YAML or JSON ({str(exc).splitlines()[0]}). Fix the file's syntax.") from None
    return validate_attributes(data, str(p))


def dump_attributes(attributes: AttributeSet) -> str:
    return yaml.safe_dump(attributes, sort_keys=False, allow_unicode=True, width=1000)


def draw(attributes: AttributeSet, seed: int, call: int) -> dict[str, str]:
    """The attribute values of call ``call``: round ``call // len(values)`` of a per-round shuffle."""
    chosen = {}
    for name, values in attributes.items():
        round_, slot = divmod(call, len(values))
        order = list(values)
        random.Random(f"attributes:{seed}:{name}:{round_}").shuffle(order)
        chosen[name] = order[slot]
    return chosen
