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
