"""Language codes: ISO 639-3 inside the harness, whatever a data source or a user writes.

UD names treebanks with ISO 639-1 codes where one exists (`en_ewt`), MasakhaNER and UDHR use
639-3, AmericasNLI mixes them (`gn`, `quy`), BCP-47 tags carry regions (`pt-BR`). `langcodes`
resolves them all; its CLDR normalisation is off, since it would map Tagalog (`tl`) to Filipino.
"""

from __future__ import annotations

import functools

import langcodes

from bench.errors import BenchError


@functools.cache
def iso639_3(code: str) -> str:
    """`en`, `eng`, `en-US`, `EN` -> `eng`; a local-use code (`qaa`-`qtz`) stays as it is."""
    try:
        return langcodes.Language.get(code.strip().replace("_", "-"), normalize=False).to_alpha3()
    except (LookupError, ValueError):
        raise BenchError(
            f"language {code!r} is not an ISO 639-1, ISO 639-3 or BCP-47 code"
        ) from None
