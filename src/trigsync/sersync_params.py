"""sersync's ``<commonParams params="-artuz"/>`` as the rsync options trigsync adds.

trigsync always runs ``rsync -a`` with deletions and chooses ``-R`` and the file list
itself, so what those cover is dropped; every other option is kept as it was written.
"""

from __future__ import annotations

import shlex

# Short options that trigsync's own -a already gives, or that it must choose itself.
_SHORT_SUBSUMED = "artlpgoDRv"
_SHORT_WITH_VALUE = "efBTM"
_LONG_DROPPED = {
    "--archive",
    "--recursive",
    "--times",
    "--links",
    "--perms",
    "--owner",
    "--group",
    "--devices",
    "--specials",
    "--relative",
    "--verbose",
    "--delete",
}


def common_params(params: str) -> list[str]:
    """The options worth keeping from sersync's params; ValueError if one is not an option."""
    kept: list[str] = []
    words = iter(shlex.split(params))
    for word in words:
        if word.startswith("--"):
            if word.split("=", 1)[0] not in _LONG_DROPPED:
                kept.append(word)
        elif word.startswith("-") and len(word) > 1:
            letters = ""
            for i, c in enumerate(word[1:], 1):
                if c in _SHORT_WITH_VALUE:  # the rest of the word, or the next, is its value
                    kept += [f"-{c}", word[i + 1 :] or next(words, "")]
                    break
                if c not in _SHORT_SUBSUMED:
                    letters += c
            if letters:
                kept.insert(0, f"-{letters}")
        else:
            raise ValueError(f"{word!r} is not an option")
    return kept
