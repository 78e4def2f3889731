"""Typological language vectors: URIEL (Littell et al. 2017) through `lang2vec`, or a suite's own.

A language's vector is the concatenation of URIEL's `syntax_knn`, `phonology_knn` and
`inventory_knn` feature sets (UDapter's choice): 289 binary values with no gaps, the missing
ones predicted by URIEL from the language's nearest neighbours. `lang2vec` ships the database in
its wheel, so lookups run offline. A suite whose languages URIEL does not know (the demo's
invented ones) gives its own vectors in the same layout (`Suite.typology`).
"""

from __future__ import annotations

import difflib
import functools
import math
import sys
import unicodedata
import warnings
from collections.abc import Iterable
from pathlib import Path

from bench.errors import BenchError
from bench.languages import iso639_3

FEATURE_SETS = ("syntax_knn", "phonology_knn", "inventory_knn")
SIZE = 289  # 103 syntax, 28 phonology and 158 inventory features


@functools.cache
def _lang2vec():
    # lang2vec's wheel also installs a script `lang2vec.py` beside the console scripts, and a
    # console script (`pytest`, `xlt-bench`) runs with that folder first on sys.path: the
    # script would be imported in place of the package
    saved = sys.path[:]
    sys.path[:] = [p for p in sys.path if not (Path(p or ".") / "lang2vec.py").is_file()]
    try:
        with warnings.catch_warnings():  # lang2vec 1.1.2 imports pkg_resources, which warns
            warnings.simplefilter("ignore")
            import lang2vec.lang2vec as l2v
    finally:
        sys.path[:] = saved
    return l2v


@functools.cache
def uriel_languages() -> frozenset[str]:
    """The ISO 639-3 codes URIEL has vectors for."""
    return frozenset(_lang2vec().available_uriel_languages())


@functools.cache
def feature_names() -> tuple[str, ...]:
    """The names of a vector's values, in order (`S_SVO`, `P_TONE`, `INV_CONS_...`)."""
    header = _lang2vec().get_features(["eng"], "+".join(FEATURE_SETS), header=True)["CODE"]
    return tuple(header)


def has(code: str) -> bool:
    return iso639_3(code) in uriel_languages()


@functools.cache
def uriel(code: str) -> tuple[float, ...]:
    """The language's URIEL vector; a language URIEL lacks is one line naming the nearest codes
    it has."""
    language = iso639_3(code)
    if language not in uriel_languages():
        # the languages it files under the name (a macrolanguage's varieties: Guarani `grn`,
        # Paraguayan Guarani `gug`), else codes that share the first two letters (Otomian `oto`:
        # the Otomi languages ot*), else the most similar spellings
        have = sorted(uriel_languages())
        near = [f"{c} ({_names()[c]})" for c in _named(language)][:8]
        near = near or [c for c in have if c[:2] == language[:2]][:8]
        near = near or difflib.get_close_matches(language, have, n=5, cutoff=0.6)
        have = f"; the nearest codes it has: {', '.join(near)}" if near else ""
        raise BenchError(f"URIEL has no typological vector for language {code!r}{have}")
    values = _lang2vec().get_features([language], "+".join(FEATURE_SETS))[language]
    return tuple(float(v) for v in values)


def uriel_code(suite, language: str) -> str:
    """The code URIEL files the suite's `language` under: the suite's `uriel` mapping (a
    macrolanguage to the variety its data is in), else the language's own."""
    language = iso639_3(language)
    return getattr(suite, "uriel", {}).get(language, language)


def _plain(text: str) -> str:
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower()


@functools.cache
def _names() -> dict[str, str]:
    """URIEL's codes -> their English names."""
    import langcodes

    return {c: langcodes.Language.get(c, normalize=False).display_name() for c in uriel_languages()}


def _named(language: str) -> list[str]:
    """URIEL's codes whose names hold the language's (`Nahuatl languages`: every `... Nahuatl`)."""
    own = _plain(name(language)).removesuffix(" languages")
    if own == "?":
        return []
    return sorted(c for c, known in _names().items() if own in _plain(known))


def vector(suite, language: str) -> tuple[float, ...]:
    """The language's vector: the suite's own where it gives them, URIEL's otherwise."""
    if own := getattr(suite, "typology", None):
        return own(language)
    code = uriel_code(suite, language)
    try:
        return uriel(code)
    except BenchError as error:
        if code != iso639_3(language):
            raise BenchError(f"{error} (the suite's `uriel` maps {language} to it)") from None
        raise BenchError(
            f"{error}; a suite file maps a language to the code URIEL has, as "
            f'`uriel = {{ {language} = "..." }}`'
        ) from None


def check(suite, languages: Iterable[str]) -> None:
    """Every language has a vector, before a run starts: one line for the first that has not."""
    for language in dict.fromkeys(languages):
        vector(suite, language)


def distance(a: Iterable[float], b: Iterable[float]) -> float:
    """Cosine distance (0: the same typology; 1: nothing in common)."""
    a, b = list(a), list(b)
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    norms = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return 1.0 - dot / norms if norms else 1.0


def name(code: str, suite=None) -> str:
    """The language's English name: the suite's (its invented languages), else CLDR's."""
    import langcodes

    if suite is not None and code in suite.language_names:
        return suite.language_names[code]
    for normalize in (False, True):  # unnormalised keeps Tagalog (tl) apart from Filipino
        found = langcodes.Language.get(code, normalize=normalize).display_name()
        if not found.startswith("Unknown language"):
            return found
    return "?"


def languages_table(codes: Iterable[str], suite) -> str:
    """`bench languages`: per language, its code, name, whether it has a typological vector (the
    suite's own, or URIEL's) and which of the suite's tasks and splits have data for it."""
    rows = []
    for given in codes:
        code = iso639_3(given)
        if getattr(suite, "typology", None) is not None and code in suite.language_names:
            vector = "suite"
        elif (filed := uriel_code(suite, code)) in uriel_languages():
            vector = "URIEL" if filed == code else f"URIEL ({filed})"
        else:
            vector = "no"
        data = [
            f"{task} ({', '.join(splits)})"
            for task in suite.sources
            if (splits := suite.task(task).source.splits(code))
        ]
        # named from the code as given: langcodes knows `tl` as Tagalog, `tgl` only normalised
        # (to Filipino)
        known = name(given, suite) if name(given, suite) != "?" else name(code, suite)
        rows.append((code, known, vector, "; ".join(data) or "none"))
    header = ("code", "name", "typology", f"data in suite {suite.name}")
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(3)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row[:3], widths, strict=True))
        + "  "
        + row[3]
        for row in (header, *rows)
    )
