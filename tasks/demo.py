"""The `demo` suite: the synthetic world of `tasks.synthetic` and the shipped demo backbone.

It runs offline in minutes on a laptop CPU. The world is synthetic: its scores show that the
machinery works and how methods compare on a controlled problem, not how they do on real languages.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

from bench.config import TrainConfig
from bench.suites import SUITES, Suite
from tasks import synthetic

if TYPE_CHECKING:
    import datasets

WORLD_SEED = 0  # the demo data is fixed; a run's --seed varies training, not the benchmark
MLM_SENTENCES = 20000  # unlabelled sentences per language; train.mlm_cap takes a prefix
# generated splits, kept across processes; their names hold the generator's code hash
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "xlt-bench" / "demo"
_CODE_HASH = hashlib.sha256(Path(synthetic.__file__).read_bytes()).hexdigest()[:16]


class WorldSource:
    """One task's data in the synthetic world."""

    def __init__(self, task: str, seed: int = WORLD_SEED) -> None:
        self.task = task
        self.world = synthetic.world(seed)
        self._loaded: dict[tuple[str, str], datasets.Dataset] = {}

    def labels(self) -> tuple[str, ...]:
        return {
            "pos": synthetic.POS_TAGS,
            "ner": synthetic.NER_TAGS,
            "nli": synthetic.NLI_LABELS,
            "mlm": (),
        }[self.task]

    def splits(self, language: str) -> tuple[str, ...]:
        if language not in synthetic.LANGUAGES:
            return ()
        return ("train",) if self.task == "mlm" else synthetic.SPLITS

    def load(self, language: str, split: str) -> datasets.Dataset:
        # a run loads a split several times (leakage checks, screening, batches): the world is
        # fixed, and a Dataset is not changed in place, so one copy serves them all
        if (language, split) not in self._loaded:
            self._loaded[language, split] = self._load(language, split)
        return self._loaded[language, split]

    def _load(self, language: str, split: str) -> datasets.Dataset:
        """From the user's cache when an earlier process generated the split (generating the
        world's splits costs seconds of CPU in every run); generated and cached otherwise."""
        import datasets

        from bench.data import write_cache

        path = CACHE / self.fingerprint(language, split)
        if path.is_dir():
            return datasets.load_from_disk(str(path))
        data = self._generate(language, split)
        with contextlib.suppress(OSError):  # a read-only home: generated again next time
            write_cache(data, path)
        return data

    def _generate(self, language: str, split: str) -> datasets.Dataset:
        import datasets

        if self.task == "mlm":
            return datasets.Dataset.from_dict({"text": self.world.text(language, MLM_SENTENCES)})
        if self.task == "nli":
            return datasets.Dataset.from_list(self.world.nli(language, split))
        rows = self.world.tagged(language, split)
        tokens = [row["tokens"] for row in rows]
        return datasets.Dataset.from_dict({"tokens": tokens, "tags": [r[self.task] for r in rows]})

    def fingerprint(self, language: str, split: str) -> str:
        size = MLM_SENTENCES if self.task == "mlm" else ""
        return f"synthetic-{_CODE_HASH}-{self.world.seed}-{self.task}-{language}-{split}-{size}"


# The demo languages' typology, in URIEL's layout (`bench.typology`), read off the generator's
# own grammar tables and sound inventories: the features the grammar decides are set, the rest 0.
_LETTERS = {  # a letter of the generator's phonologies -> its URIEL inventory feature
    "p": "VOICELESS_BILABIAL_PLOSIVE", "b": "VOICED_BILABIAL_PLOSIVE",
    "t": "VOICELESS_ALVEOLAR_PLOSIVE", "d": "VOICED_ALVEOLAR_PLOSIVE",
    "k": "VOICELESS_VELAR_PLOSIVE", "q": "VOICELESS_UVULAR_PLOSIVE", "m": "BILABIAL_NASAL",
    "n": "ALVEOLAR_NASAL", "ng": "VELAR_NASAL", "f": "VOICELESS_LABIODENTAL_FRICATIVE",
    "v": "VOICED_LABIODENTAL_FRICATIVE", "s": "VOICELESS_ALVEOLAR_FRICATIVE",
    "ş": "VOICELESS_POSTALVEOLAR_FRICATIVE", "x": "VOICELESS_VELAR_FRICATIVE",
    "h": "VOICELESS_GLOTTAL_FRICATIVE", "l": "ALVEOLAR_LATERAL_APPROXIMANT", "r": "ALVEOLAR_TRILL",
    "y": "PALATAL_APPROXIMANT", "j": "PALATAL_APPROXIMANT",
    "w": "VOICED_LABIAL_VELAR_APPROXIMANT", "a": "OPEN_FRONT_UNROUNDED_VOWEL",
    "e": "CLOSE_MID_FRONT_UNROUNDED_VOWEL", "i": "CLOSE_FRONT_UNROUNDED_VOWEL",
    "o": "OPEN_MID_BACK_ROUNDED_VOWEL", "u": "CLOSE_BACK_ROUNDED_VOWEL",
    "ı": "CLOSE_BACK_UNROUNDED_VOWEL", "ü": "CLOSE_FRONT_ROUNDED_VOWEL",
}  # fmt: skip
_PLACES = {
    "LABIAL": "pbmfvw", "ALVEOLAR": "tdnslr", "VELAR": "kx", "UVULAR": "q", "GLOTTAL": "h",
    "PALATAL": "yj", "PALATOALVEOLAR": "şç",
}  # fmt: skip


def typology_features(code: str) -> dict[str, float]:
    """The URIEL features (by name) that the demo language's grammar and sounds decide."""
    g = synthetic._GRAMMARS[code]
    p = synthetic.PROFILES[code]
    sounds = {"Avelic": synthetic._AVELIC, "Kortic": synthetic._KORTIC}.get(
        p.family, synthetic._ZUVAI
    )
    order = "".join(c for c in g.order if c in "SVO")
    before = lambda a, b: g.order.index(a) < g.order.index(b)  # noqa: E731
    affix = "PREFIX" if g.prefixing else "SUFFIX"
    syntax = {
        f"S_{order}": True,
        "S_SUBJECT_BEFORE_VERB": before("S", "V"), "S_SUBJECT_AFTER_VERB": before("V", "S"),
        "S_OBJECT_AFTER_VERB": before("V", "O"), "S_OBJECT_BEFORE_VERB": before("O", "V"),
        "S_SUBJECT_BEFORE_OBJECT": before("S", "O"), "S_SUBJECT_AFTER_OBJECT": before("O", "S"),
        "S_OBLIQUE_AFTER_VERB": before("V", "L"), "S_OBLIQUE_BEFORE_VERB": before("L", "V"),
        "S_OBLIQUE_AFTER_OBJECT": before("O", "L"), "S_OBLIQUE_BEFORE_OBJECT": before("L", "O"),
        "S_DEFINITE_WORD": g.articles, "S_INDEFINITE_WORD": g.articles,
        "S_ARTICLE_WORD_BEFORE_NOUN": g.articles,
        "S_ADPOSITION_BEFORE_NOUN": not g.postpositions,
        "S_ADPOSITION_AFTER_NOUN": g.postpositions,
        "S_ADJECTIVE_BEFORE_NOUN": not g.adjective_after,
        "S_ADJECTIVE_AFTER_NOUN": g.adjective_after,
        "S_NUMERAL_BEFORE_NOUN": True, f"S_PLURAL_{affix}": True, f"S_TEND_{affix}": True,
        f"S_TAM_{affix}": True, "S_PAST_VS_PRESENT_MARK": bool(g.present) or bool(g.past),
        "S_FUTURE_AFFIX": not g.future.startswith("AUX:"),
        "S_NOMINATIVE_VS_ACCUSATIVE_MARK": bool(g.accusative),
        f"S_CASE_{affix}": bool(g.accusative or g.locative),
        "S_CASE_MARK": bool(g.accusative or g.locative),
        "S_NEGATIVE_WORD": g.negation == "particle",
        "S_NEGATIVE_WORD_BEFORE_VERB": g.negation == "particle",
        "S_NEGATIVE_WORD_ADJACENT_BEFORE_VERB": g.negation == "particle",
        "S_NEGATIVE_AFFIX": g.negation != "particle",
        "S_NEGATIVE_SUFFIX": g.negation != "particle",  # stem, negation, tense
    }  # fmt: skip
    onsets, codas = set(sounds.onsets), {c for c in sounds.codas if c}
    letters = {ch for unit in (*onsets, *codas, *sounds.vowels) for ch in unit}
    units = letters | onsets | codas
    qualities = {v for v in sounds.vowels if len(v) == 1}
    phonology = {
        "P_VOICED_PLOSIVES": bool(letters & set("bdg")),
        "P_VOICED_FRICATIVES": bool(letters & set("vz")),
        "P_VOICE": bool(letters & set("bdgvz")),
        "P_UVULARS": "q" in letters, "P_UVULAR_STOPS": "q" in letters,
        "P_LATERALS": "l" in letters, "P_LATERAL_L": "l" in letters,
        "P_FRONT_ROUND_VOWELS": "ü" in letters, "P_BILABIALS": bool(letters & set("pbm")),
        "P_FRICATIVES": bool(letters & set("fvszşxhç")), "P_NASALS": bool(letters & set("mn")),
        "P_COMPLEX_ONSETS": any(len(o) > 1 and o not in ("ts", "ng") for o in onsets),
        "P_VELAR_NASAL": "ng" in units, "P_VELAR_NASAL_INITIAL": "ng" in onsets,
        "P_CODAS": bool(codas),
        "P_LONG_VOWELS": any(len(set(v)) == 1 < len(v) for v in sounds.vowels),
    }  # fmt: skip
    inventory = {f"INV_{_LETTERS[u]}": True for u in units if u in _LETTERS}
    inventory |= {f"INV_PLACE_{place}": bool(letters & set(ls)) for place, ls in _PLACES.items()}
    inventory[f"INV_VOWEL_{len(qualities)}"] = True
    return {name: float(value) for name, value in {**syntax, **phonology, **inventory}.items()}


def typology(code: str) -> tuple[float, ...]:
    """`typology_features` in the layout of URIEL's vectors (`bench.typology.feature_names`)."""
    from bench import typology as uriel

    features = typology_features(code)
    return tuple(features.get(name, 0.0) for name in uriel.feature_names())


def demo_suite() -> Suite:
    """Synthetic 7-language world and the shipped small BERT: offline, minutes on a CPU."""
    profiles = synthetic.PROFILES
    by_role = {
        role: [c for c, p in profiles.items() if p.role == role] for role in ("source", "target")
    }
    main = next(c for c, p in profiles.items() if p.role == "main source")
    return Suite(
        name="demo",
        description="synthetic 7-language world, small BERT shipped in backbones/demo (offline)",
        backbone="demo",
        sources={task: WorldSource(task) for task in ("ner", "pos", "nli", "mlm")},
        main_source=main,
        # Mirrors the paper's ar-NER and tr-POS: the close relative has NER, the distant one POS.
        extra_sources={by_role["source"][0]: "ner", by_role["source"][1]: "pos"},
        targets=tuple(by_role["target"]),
        train=TrainConfig(),
        # Hyper-X's reference sizes and learning rate are for mBERT (hidden 768, 100k steps): on
        # this hidden-128 backbone with 600 steps, a 64-wide bottleneck and a 10x learning rate.
        # MAD-X gets the same 64-wide task adapters, and language adapters trained for 1,000
        # steps per language (MAD-X: 250,000 on Wikipedia), once: they are cached.
        method_options={
            **{name: {"bottleneck": 64, "lr": 1e-3} for name in ("hyperx", "hyperx-small")},
            "madx": {
                "lr": 1e-3,
                "task_reduction": 2.0,
                "lang_steps": 1000,
                "lang_lr": 1e-3,
                "lang_batch_size": 32,
            },
        },
        language_names={code: p.name for code, p in profiles.items()},
        typology=typology,
        # the targets the backbone never saw: under zero-text, no text anywhere
        no_text=tuple(c for c in by_role["target"] if not profiles[c].in_pretraining),
        language_notes={
            code: "; ".join(
                dict.fromkeys(  # the main source's role and relation are the same words
                    (p.role, p.relation, f"{'in' if p.in_pretraining else 'not in'} pretraining")
                )
            )
            for code, p in profiles.items()
        },
    )


SUITES.add("demo", demo_suite)
