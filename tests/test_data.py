import datasets
import numpy as np
import pytest
import torch
from test_formats import CONLLU
from transformers import AutoTokenizer

from bench.data import Collator, PairData, PairSampler, load_pair, sampling_probabilities
from bench.evaluation import predict
from bench.heads import IGNORE
from bench.model import Model, Output
from bench.runner import backbone_path
from bench.settings import Pair
from bench.task import TASKS, Kind, Task
from tasks import formats
from tasks.files import FileSource


@pytest.fixture(scope="module")
def tokenizer(demo):
    return AutoTokenizer.from_pretrained(backbone_path(demo.backbone))


def test_only_the_first_sub_token_of_a_word_is_labelled(demo, tokenizer):
    data = load_pair(demo.task("pos"), demo.main_source, "dev", tokenizer, max_length=128)
    labels_of = demo.task("pos").labels
    for i in range(20):
        row = data.rows[i]
        labels = [x for x in data.columns["labels"][i] if x != IGNORE]
        assert [labels_of[x] for x in labels] == row["tags"]
        assert data.columns["n_labelled"][i] == len(row["tokens"])


def test_truncation_keeps_labels_aligned(demo, tokenizer):
    data = load_pair(demo.task("ner"), demo.main_source, "dev", tokenizer, max_length=8)
    labels_of = demo.task("ner").labels
    for i in range(20):
        kept = [labels_of[x] for x in data.columns["labels"][i] if x != IGNORE]
        assert kept == data.rows[i]["tags"][: len(kept)]
        assert len(data.columns["input_ids"][i]) <= 8


class _Oracle(Model):
    """Predicts each labelled position's gold label: what is left to check is where evaluation
    puts the predictions."""

    def __init__(self, labels: int) -> None:
        super().__init__()
        self.labels = labels

    def forward(self, batch, pair):
        gold = batch["labels"].clamp(min=0)
        return Output(torch.zeros(()), torch.nn.functional.one_hot(gold, self.labels).float())


def test_every_word_of_a_sentence_beyond_max_length_is_predicted(demo, tokenizer):
    """Evaluation reads a long sentence in overlapping windows: each word is predicted in exactly
    one of them, and the predictions land on their own words, as they would without a cut."""
    task = demo.task("ner")
    whole = load_pair(task, demo.main_source, "dev", tokenizer, max_length=128, windows=True)
    assert whole.cut == 0 and len(whole) == len(whole.rows)  # every sentence fits: no windows
    cut = load_pair(task, demo.main_source, "dev", tokenizer, max_length=8, windows=True)
    lengths = [len(tokens) for tokens in cut.rows["tokens"]]
    assert len(cut) > len(cut.rows) and cut.words == sum(lengths) == sum(cut.columns["n_labelled"])
    # what truncation at 8 sub-words drops
    truncated = load_pair(task, demo.main_source, "dev", tokenizer, max_length=8)
    assert cut.cut == sum(lengths) - sum(truncated.columns["n_labelled"]) > 0
    seen: dict[int, list[int]] = {}
    for example, words, ids in zip(
        cut.columns["example"], cut.columns["words"], cut.columns["input_ids"], strict=True
    ):
        assert len(ids) <= 8
        seen.setdefault(example, []).extend(w for w in words if w >= 0)
    assert [seen[i] for i in range(len(lengths))] == [list(range(n)) for n in lengths]

    collator = Collator(tokenizer, 0.15, seed=0)
    predicted = predict(_Oracle(len(task.labels)), task, cut, collator, batch_size=7)
    assert predicted == cut.rows["tags"]


def test_encodings_are_cached_and_invalidated_by_their_key(demo, tokenizer, tmp_path):
    task = demo.task("nli")
    first = load_pair(task, demo.main_source, "dev", tokenizer, max_length=32, cache_dir=tmp_path)
    entries = sorted(p.name for p in tmp_path.iterdir())
    assert len(entries) == 1
    again = load_pair(task, demo.main_source, "dev", tokenizer, max_length=32, cache_dir=tmp_path)
    assert again.columns == first.columns
    assert sorted(p.name for p in tmp_path.iterdir()) == entries  # a hit writes nothing
    load_pair(task, demo.main_source, "dev", tokenizer, max_length=48, cache_dir=tmp_path)
    load_pair(task, demo.main_source, "dev", tokenizer, max_length=32, cap=10, cache_dir=tmp_path)
    assert len(list(tmp_path.iterdir())) == 3


def test_an_entry_another_process_wrote_meanwhile_is_kept(demo, tokenizer, tmp_path, monkeypatch):
    """Two sweep workers encoding one split at once: the second to finish finds the entry in
    place, keeps it, and leaves no temporary copy behind."""
    task, real = demo.task("pos"), datasets.Dataset.save_to_disk
    other = load_pair(task, demo.main_source, "dev", tokenizer, max_length=32, cache_dir=tmp_path)
    entry = next(tmp_path.iterdir())
    held = tmp_path.parent / "held"
    entry.rename(held)  # the other process's entry, put in place while this one writes

    def save_then_lose_the_race(self, folder, *args, **kwargs):
        real(self, folder, *args, **kwargs)
        held.rename(entry)

    monkeypatch.setattr(datasets.Dataset, "save_to_disk", save_then_lose_the_race)
    data = load_pair(task, demo.main_source, "dev", tokenizer, max_length=32, cache_dir=tmp_path)
    assert not data.cached and data.columns["input_ids"] == other.columns["input_ids"]
    assert list(tmp_path.iterdir()) == [entry]
    monkeypatch.undo()
    again = load_pair(task, demo.main_source, "dev", tokenizer, max_length=32, cache_dir=tmp_path)
    assert again.cached and again.columns["input_ids"] == other.columns["input_ids"]


def test_the_cache_is_invalidated_when_the_tokenizer_or_the_data_changes(demo, tmp_path):
    def encode(tokenizer, source):
        task = Task(TASKS.get("pos"), source)
        return load_pair(task, "eng", "train", tokenizer, max_length=32, cache_dir=tmp_path / "c")

    conllu = tmp_path / "en.conllu"
    conllu.write_text(CONLLU)
    files = FileSource(Kind.TOKEN, {"eng": {"train": conllu}}, formats.UPOS)
    tokenizer = AutoTokenizer.from_pretrained(backbone_path(demo.backbone))
    first = encode(tokenizer, files)
    assert not first.cached and encode(tokenizer, files).cached  # the second read is a hit

    tokenizer.add_tokens(["Yes"])  # another vocabulary: the same words encode otherwise
    other = encode(tokenizer, files)
    assert not other.cached and other.columns["input_ids"] != first.columns["input_ids"]

    conllu.write_text(CONLLU.replace("3\tgo\t", "3\twent\t"))  # one word edited in the file
    edited = encode(tokenizer, FileSource(Kind.TOKEN, {"eng": {"train": conllu}}, formats.UPOS))
    assert not edited.cached and edited.columns["input_ids"] != other.columns["input_ids"]
    assert len(list((tmp_path / "c").iterdir())) == 3


def test_temperature_sampling_flattens_sizes():
    sizes = {Pair("pos", "a"): 900, Pair("ner", "b"): 100}
    assert sampling_probabilities(sizes, 1.0)[Pair("pos", "a")] == pytest.approx(0.9)
    p5 = sampling_probabilities(sizes, 5.0)[Pair("pos", "a")]
    expected = 0.9**0.2 / (0.9**0.2 + 0.1**0.2)
    assert p5 == pytest.approx(expected)
    assert sampling_probabilities(sizes, 1e6)[Pair("pos", "a")] == pytest.approx(0.5, abs=1e-4)


def _fake(pair: Pair, n: int, kind: Kind = Kind.TOKEN) -> PairData:
    import datasets

    rows = datasets.Dataset.from_dict({"x": list(range(n))})
    return PairData(pair, kind, rows, rows)


def test_sampler_is_seeded_one_pair_per_batch_and_repeats_small_pairs():
    data = {
        Pair("pos", "a"): _fake(Pair("pos", "a"), 1000),
        Pair("ner", "b"): _fake(Pair("ner", "b"), 5),
    }
    draws = [
        d for _, d in zip(range(400), PairSampler(data, 8, 5.0, seed=3, steps=400), strict=False)
    ]
    again = [
        d for _, d in zip(range(400), PairSampler(data, 8, 5.0, seed=3, steps=400), strict=False)
    ]
    assert draws == again
    small = [idx for pair, idx in draws if pair == Pair("ner", "b")]
    assert small and all(sorted(idx) == list(range(5)) for idx in small)  # whole pair, no repeats
    share = len(small) / len(draws)
    expected = sampling_probabilities({p: len(d) for p, d in data.items()}, 5.0)[Pair("ner", "b")]
    assert abs(share - expected) < 0.06
    big = np.concatenate([idx for pair, idx in draws if pair == Pair("pos", "a")][:100])
    assert len(set(big.tolist())) == len(big)  # an epoch is a permutation: no repeats within it


def test_the_labelled_stream_is_the_same_with_or_without_mlm_batches():
    labelled = {
        Pair("pos", "a"): _fake(Pair("pos", "a"), 300),
        Pair("ner", "b"): _fake(Pair("ner", "b"), 40),
    }
    mlm = {Pair("mlm", "a"): _fake(Pair("mlm", "a"), 500, Kind.MLM),
           Pair("mlm", "c"): _fake(Pair("mlm", "c"), 500, Kind.MLM)}  # fmt: skip
    alone = list(PairSampler(labelled, 8, 5.0, seed=1, steps=200))
    mixed = PairSampler({**labelled, **mlm}, 8, 5.0, seed=1, steps=200)
    draws = list(mixed)
    assert [d for d in draws if d[0].task != "mlm"] == alone  # 200 labelled, the same
    share = sampling_probabilities({p: len(d) for p, d in {**labelled, **mlm}.items()}, 5.0)
    expected = share[Pair("mlm", "a")] + share[Pair("mlm", "c")]
    mlm_steps = len(draws) - 200
    assert mixed.mlm_share == pytest.approx(expected)
    assert abs(mlm_steps / len(draws) - expected) < 0.08
    assert mixed.counted[-1] == 200 and len(mixed.counted) == len(draws)
    # total: 200 batches in all; its labelled batches are the first of the same stream
    total = list(PairSampler({**labelled, **mlm}, 8, 5.0, seed=1, steps=200, budget="total"))
    assert len(total) == 200
    kept = [d for d in total if d[0].task != "mlm"]
    assert kept == alone[: len(kept)] and len(kept) < 200
    assert list(PairSampler(mlm, 8, 5.0, seed=1, steps=30)) == list(
        PairSampler(mlm, 8, 5.0, seed=1, steps=30, budget="total")
    )  # only MLM pairs (a stage): either budget counts every batch


def test_a_resumed_sampler_draws_what_an_uninterrupted_one_does():
    data = {Pair("pos", "a"): _fake(Pair("pos", "a"), 50),
            Pair("mlm", "a"): _fake(Pair("mlm", "a"), 70, Kind.MLM)}  # fmt: skip
    whole = list(PairSampler(data, 8, 2.0, seed=4, steps=60))
    first = PairSampler(data, 8, 2.0, seed=4, steps=60)
    head = [d for _, d in zip(range(25), first, strict=False)]
    second = PairSampler(data, 8, 2.0, seed=4, steps=60)
    second.load_state_dict(first.state_dict())
    assert head + list(second) == whole
