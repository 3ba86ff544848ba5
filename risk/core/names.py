"""Close matches for a mistyped name (a config key, a column), for "did you mean ...?" messages."""

from __future__ import annotations

from collections.abc import Iterable


def close_names(name: str, known: Iterable[str], count: int = 3) -> list[str]:
    """The known names ``name`` was probably meant to be: the same letters in another case first,
    then difflib's close matches; empty when none is close."""
    import difflib  # only when a name is wrong: the cron fast path imports the modules that call this

    known = sorted(known)
    same_letters = [k for k in known if k.lower() == name.lower()]
    close = same_letters + [
        k for k in difflib.get_close_matches(name, known, n=count, cutoff=0.6) if k not in same_letters
    ]
    return close[:count]
