"""From a task's rows to tensors: tokenisation with first-sub-token labels, an on-disk cache,
padding, MLM masking, and temperature sampling over pairs (one pair per batch)."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import itertools
import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import datasets
import numpy as np
import torch
from transformers import DataCollatorForLanguageModeling, PreTrainedTokenizerBase

from bench.errors import BenchError
from bench.heads import IGNORE
from bench.settings import Pair
from bench.task import Kind, Task

ENCODING_VERSION = "2"  # bump when the encoding below changes, to invalidate caches

datasets.disable_progress_bars()  # cache writes take milliseconds; the training bar is the one bar


@dataclasses.dataclass
class PairData:
    """One pair's examples of one split: the rows (for gold labels) and their encodings."""

    pair: Pair
    kind: Kind
    rows: datasets.Dataset
    # input_ids, token_type_ids, labels (per token or one), n_labelled; evaluated token tasks
    # also example, words and cut (see `encode`)
    encoded: datasets.Dataset
    fingerprint: str = ""  # changes whenever the encoded examples would (keys trained stages)
    cached: bool = False  # the encodings were read from the on-disk cache, not tokenised now

    def __len__(self) -> int:
        return len(self.encoded)

    @functools.cached_property
    def columns(self) -> dict[str, list]:
        return self.encoded.to_dict()  # python lists: batching from them beats Arrow row access

    @functools.cached_property
    def row_columns(self) -> dict[str, list]:
        """The examples as read (words, tags, sentences), column by column."""
        return self.rows.to_dict()  # at once: a Dataset read row by row formats each row

    @functools.cached_property
    def row_list(self) -> list[dict]:
        """The examples as read, one dict each."""
        return self.rows.to_list()

    @property
    def tokens(self) -> int:
        return sum(len(ids) for ids in self.columns["input_ids"])

    def examples(self, indices: list[int]) -> dict[str, list]:
        return {name: [column[i] for i in indices] for name, column in self.columns.items()}

    def subset(self, indices: list[int], part: str) -> PairData:
        """Some of the examples, as data of their own; `part` names them in the fingerprint."""
        return PairData(
            self.pair, self.kind, self.rows.select(indices), self.encoded.select(indices),
            f"{self.fingerprint}-{part}", self.cached,
        )  # fmt: skip

    @property
    def words(self) -> int:
        """Words of a token task's split (0 for other tasks)."""
        return sum(map(len, self.row_columns["tokens"])) if self.kind is Kind.TOKEN else 0

    @property
    def cut(self) -> int:
        """Words that truncation at `max_length` would have lost, read in later windows instead
        (0 where the split is not encoded in windows)."""
        return sum(self.columns.get("cut", ()))


_FINGERPRINTS: dict[str, str] = {}  # sha256 of a serialised fast tokenizer -> its fingerprint


def tokenizer_fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    """Changes whenever the tokenizer would encode otherwise (vocabulary, added tokens, rules).
    Parsing a large tokenizer's JSON takes most of a second (e5's 250k pieces), and a run asks
    once per split: a fast tokenizer's is worked out once per serialised state."""
    if not tokenizer.is_fast:
        return _digest(tokenizer.get_vocab())
    serialised = tokenizer.backend_tokenizer.to_str()
    raw = hashlib.sha256(serialised.encode()).hexdigest()
    if raw not in _FINGERPRINTS:
        state = json.loads(serialised)
        # truncation and padding are call-time state of the backend, not part of the tokenizer
        state.pop("truncation", None)
        state.pop("padding", None)
        _FINGERPRINTS[raw] = _digest(state)
    return _FINGERPRINTS[raw]


def _digest(state: dict) -> str:
    return hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()[:16]


def load_pair(
    task: Task,
    language: str,
    split: str,
    tokenizer: PreTrainedTokenizerBase,
    *,
    max_length: int,
    cap: int | None = None,
    indices: tuple[int, ...] | None = None,
    exclude: tuple[int, ...] = (),
    cache_dir: Path | None = None,
    windows: bool = False,
) -> PairData:
    """Load, subset and encode one pair's split, reusing the on-disk encoding when it is current.
    `windows`: a token task's sentences longer than `max_length` are read in overlapping windows
    (evaluation: every word gets a prediction), not truncated (training)."""
    rows = task.load(language, split)
    if indices is not None or exclude:  # both name examples by their index in the split
        drop = set(exclude)
        kept = range(len(rows)) if indices is None else indices
        rows = rows.select([i for i in kept if i not in drop])
    if cap is not None and cap < len(rows):
        rows = rows.select(range(cap))
    if len(rows) == 0:
        raise BenchError(f"{task.name}/{language}/{split} holds no examples")
    key = {
        "version": ENCODING_VERSION,
        "tokenizer": tokenizer_fingerprint(tokenizer),
        "data": task.source.fingerprint(language, split),
        "task": task.name,
        "labels": task.labels,
        "max_length": max_length,
        "subset": [cap, indices, exclude],
        "windows": windows and task.kind is Kind.TOKEN,
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    path = cache_dir / f"{task.name}-{language}-{split}-{digest}" if cache_dir else None
    cached = path is not None and path.exists()
    if cached:
        encoded = datasets.load_from_disk(str(path))
    else:
        encoded = datasets.Dataset.from_dict(encode(task, rows, tokenizer, max_length, windows))
        if path is not None:
            write_cache(encoded, path)
    return PairData(Pair(task.name, language), task.kind, rows, encoded, digest, cached)


def write_cache(encoded: datasets.Dataset, path: Path) -> None:
    """Writes a cache entry under a temporary name of its own, then renames it into place: a
    crash mid-write never leaves an entry that looks complete, and of two processes encoding the
    same split at once (sweep workers, grids on one output), the first to finish keeps its entry
    and the other drops its copy (they are equal: the key names everything they are made of)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    try:
        encoded.save_to_disk(str(tmp / "data"))
        (tmp / "data").rename(path)
    except OSError:
        if not path.exists():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def encode(
    task: Task, dataset: datasets.Dataset, tokenizer, max_length: int, windows: bool = False
) -> dict[str, list]:
    """Token ids, and labels on each word's first sub-word (IGNORE elsewhere). Without `windows`
    a sequence is truncated to `max_length`; with it, see `_windows`."""
    rows = dataset.to_dict()
    if task.kind is Kind.MLM:
        enc = tokenizer(rows["text"], truncation=True, max_length=max_length)
        return _ids(enc)
    label_ids = {label: i for i, label in enumerate(task.labels)}

    def label_id(label: str) -> int:
        if label not in label_ids:
            valid = ", ".join(task.labels)
            raise BenchError(f"{task.name}: unknown label {label!r}; valid: {valid}")
        return label_ids[label]

    if task.kind is Kind.SENTENCE:
        enc = tokenizer(rows["premise"], rows["hypothesis"], truncation=True, max_length=max_length)
        labels = [label_id(label) for label in rows["label"]]
        return {**_ids(enc), "labels": labels, "n_labelled": [1] * len(labels)}
    if windows:
        return _windows(rows, tokenizer, max_length, label_id)
    enc = tokenizer(
        rows["tokens"], is_split_into_words=True, truncation=True, max_length=max_length
    )
    all_labels, counts = [], []
    for i, tags in enumerate(rows["tags"]):
        labels, previous = [], None
        for word in enc.word_ids(i):
            first = word is not None and word != previous
            labels.append(label_id(tags[word]) if first else IGNORE)
            previous = word
        all_labels.append(labels)
        counts.append(sum(label != IGNORE for label in labels))
    return {**_ids(enc), "labels": all_labels, "n_labelled": counts}


def _windows(rows: dict[str, list], tokenizer, max_length: int, label_id) -> dict[str, list]:
    """A token task's sentences as the model reads them in evaluation: one sequence per sentence
    that fits in `max_length` sub-words (the same ids as truncation gives), and for a longer one
    windows of `max_length` that overlap by half. Each word is labelled in exactly one window:
    the one in which its first sub-word has the most context on its less-read side. Per window:
    `example` (the sentence), `words` (the word each labelled position predicts, -1 elsewhere)
    and `cut` (on a sentence's first window: its words that truncation would have lost)."""
    room = max_length - tokenizer.num_special_tokens_to_add(pair=False)
    prefix = tokenizer.build_inputs_with_special_tokens([-1]).index(-1)  # [CLS] or <s>: 1
    enc = tokenizer(rows["tokens"], is_split_into_words=True, add_special_tokens=False)
    out: dict[str, list] = {
        k: [] for k in ("input_ids", "token_type_ids", "labels", "n_labelled", "example", "words",
                        "cut")
    }  # fmt: skip
    for i, tags in enumerate(rows["tags"]):
        ids, word_of = enc["input_ids"][i], enc.word_ids(i)
        first: dict[int, int] = {}  # word -> the position of its first sub-word
        for position, word in enumerate(word_of):
            if word is not None:
                first.setdefault(word, position)
        n = len(ids)
        starts = [0] if n <= room else [*range(0, n - room, max(1, room // 2)), n - room]

        def context(position: int, start: int) -> int:
            return min(position - start, start + room - 1 - position)

        home = {
            w: max(range(len(starts)), key=lambda k, p=p: (context(p, starts[k]), -k))
            for w, p in first.items()
        }
        for k, start in enumerate(starts):
            piece = ids[start : start + room]
            input_ids = tokenizer.build_inputs_with_special_tokens(piece)
            labels, words = [IGNORE] * len(input_ids), [-1] * len(input_ids)
            for j, position in enumerate(range(start, start + len(piece)), start=prefix):
                word = word_of[position]
                if word is not None and first[word] == position and home[word] == k:
                    labels[j], words[j] = label_id(tags[word]), word
            out["input_ids"].append(input_ids)
            out["token_type_ids"].append(tokenizer.create_token_type_ids_from_sequences(piece))
            out["labels"].append(labels)
            out["n_labelled"].append(sum(w >= 0 for w in words))
            out["example"].append(i)
            out["words"].append(words)
            out["cut"].append(sum(p >= room for p in first.values()) if k == 0 else 0)
    return out


def _ids(enc) -> dict[str, list]:
    """Token ids and segment ids; tokenizers without segments (XLM-R's) get zeros."""
    ids = enc["input_ids"]
    segments = enc["token_type_ids"] if "token_type_ids" in enc else [[0] * len(i) for i in ids]
    return {"input_ids": ids, "token_type_ids": segments}


class Collator:
    """Pads a list of encoded examples of one pair into tensors; masks MLM batches."""

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        mlm_probability: float,
        seed: int,
        device: torch.device | str = "cpu",
    ) -> None:
        self.device = torch.device(device)
        self.pad_id = tokenizer.pad_token_id
        self.special_ids = torch.tensor(tokenizer.all_special_ids)
        self.masker = DataCollatorForLanguageModeling(
            tokenizer, mlm_probability=mlm_probability, seed=seed
        )

    def rng_state(self) -> torch.Tensor | None:
        """The state of the masking generator (none until the first MLM batch of a seeded
        collator; transformers' collator masks with the global generator when the seed is 0)."""
        generator = self.masker.generator
        return None if generator is None else generator.get_state()

    def set_rng_state(self, state: torch.Tensor | None) -> None:
        self.masker.generator = None if state is None else torch.Generator().set_state(state)

    def __call__(self, examples: dict[str, list], kind: Kind) -> dict[str, torch.Tensor]:
        input_ids = _pad(examples["input_ids"], self.pad_id)
        batch = {
            "input_ids": input_ids,
            "token_type_ids": _pad(examples["token_type_ids"], 0),
            "attention_mask": (input_ids != self.pad_id).long(),
        }
        if kind is Kind.MLM:
            special = torch.isin(input_ids, self.special_ids)
            batch["input_ids"], batch["labels"] = self.masker.torch_mask_tokens(
                input_ids.clone(), special
            )
        elif kind is Kind.SENTENCE:
            batch["labels"] = torch.tensor(examples["labels"])
        else:
            batch["labels"] = _pad(examples["labels"], IGNORE)
        return {name: tensor.to(self.device) for name, tensor in batch.items()}


def _pad(sequences: list[list[int]], value: int) -> torch.Tensor:
    width = max(len(s) for s in sequences)
    out = torch.full((len(sequences), width), value, dtype=torch.long)
    for i, s in enumerate(sequences):
        out[i, : len(s)] = torch.tensor(s, dtype=torch.long)
    return out


def sampling_probabilities(sizes: dict[Pair, int], temperature: float) -> dict[Pair, float]:
    """p_i proportional to (n_i / N)^(1/T): T=1 samples by size, large T tends to uniform."""
    total = sum(sizes.values())
    weights = {pair: (n / total) ** (1.0 / temperature) for pair, n in sizes.items()}
    norm = sum(weights.values())
    return {pair: w / norm for pair, w in weights.items()}


class PairSampler:
    """Yields (pair, example indices) for each optimizer step from two seeded streams: the
    labelled pairs (temperature sampling over them, each pair's examples from its reshuffled
    epochs; small pairs repeat) and the MLM languages (the same, over the MLM pairs). Which
    stream a step draws from is decided by a third generator, with the MLM share that
    temperature sampling over all the pairs gives. So the labelled stream is the same sequence
    whether or not a method trains MLM: a method with MLM gets MLM batches in between.

    `budget` says what `steps` counts: "labelled" (labelled batches; MLM batches come on top)
    or "total" (every batch). With only one kind of pair (a stage's MLM languages, a method
    without MLM) both count every batch. `schedule` is the run's whole sequence of kinds, known
    in advance, so that learning-rate schedules and evaluations can be placed on it."""

    def __init__(
        self,
        data: dict[Pair, PairData],
        batch_size: int,
        temperature: float,
        seed: int,
        *,
        steps: int,
        budget: str = "labelled",
    ):
        mlm = {pair for pair, d in data.items() if d.kind is Kind.MLM}
        self.batch_size = batch_size
        self.streams = [
            _Stream({p: len(data[p]) for p in sorted(set(data) - mlm)}, temperature, seed),
            _Stream({p: len(data[p]) for p in sorted(mlm)}, temperature, [seed, 1]),
        ]
        labelled, unlabelled = self.streams
        share = 0.0
        if labelled.pairs and unlabelled.pairs:
            probs = sampling_probabilities({p: len(d) for p, d in data.items()}, temperature)
            share = sum(probs[p] for p in mlm)
        mix = np.random.default_rng([seed, 2])
        kinds: list[bool] = []  # True: an MLM step
        counted = 0
        while counted < steps:
            is_mlm = not labelled.pairs or (bool(unlabelled.pairs) and mix.random() < share)
            kinds.append(is_mlm)
            counted += budget == "total" or not labelled.pairs or not is_mlm
        self.schedule = kinds
        self.mlm_share = share
        # the budget's count after each step: evaluations and the last step are placed on it
        self.counted = list(
            itertools.accumulate(budget == "total" or not labelled.pairs or not k for k in kinds)
        )
        self.step = 0  # steps drawn so far

    def state_dict(self) -> dict:
        """Where the draws stand: each stream's generator and its pairs' rest of their epochs."""
        return {"step": self.step, "streams": [s.state_dict() for s in self.streams]}

    def load_state_dict(self, state: dict) -> None:
        self.step = state["step"]
        for stream, saved in zip(self.streams, state["streams"], strict=True):
            stream.load_state_dict(saved)

    def __iter__(self) -> Iterator[tuple[Pair, list[int]]]:
        while self.step < len(self.schedule):
            stream = self.streams[self.schedule[self.step]]
            self.step += 1
            yield stream.draw(self.batch_size)


class _Stream:
    """Temperature sampling over some pairs, with its own generator."""

    def __init__(self, sizes: dict[Pair, int], temperature: float, seed) -> None:
        self.pairs = list(sizes)
        probs = sampling_probabilities(sizes, temperature) if sizes else {}
        self.probs = np.array([probs[p] for p in self.pairs])
        self.sizes = [sizes[p] for p in self.pairs]
        self.rng = np.random.default_rng(seed)
        self.orders: list[np.ndarray] = [np.empty(0, dtype=int) for _ in self.pairs]

    def state_dict(self) -> dict:
        orders = [torch.from_numpy(order.astype(np.int64)) for order in self.orders]
        return {"rng": self.rng.bit_generator.state, "orders": orders}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.orders = [order.numpy() for order in state["orders"]]

    def draw(self, batch_size: int) -> tuple[Pair, list[int]]:
        i = int(self.rng.choice(len(self.pairs), p=self.probs))
        size = min(batch_size, self.sizes[i])  # a few-shot pair never repeats in a batch
        if len(self.orders[i]) < size:
            epoch = self.rng.permutation(self.sizes[i])
            self.orders[i] = np.concatenate([self.orders[i], epoch])
        take, self.orders[i] = self.orders[i][:size], self.orders[i][size:]
        return self.pairs[i], take.tolist()
