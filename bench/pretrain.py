"""Pretraining the demo backbone: a small BERT trained by MLM on the synthetic world's text.

Built once by `python -m bench backbone build demo` and committed (a few MB) with `build.json`,
which records the command, the budget, the versions and the checksum of the weights; runs load
it and never pretrain. Only PRETRAIN_LANGUAGES are seen, by the tokenizer as well as by the
model: a language whose text shaped the vocabulary but never the weights gets untrained embeddings,
which is worse than unseen (its MLM loss came out above uniform in a prototype).
"""

from __future__ import annotations

import json
import math
import shutil
import string
import sys
import time
from pathlib import Path

import tokenizers
import torch
import transformers
from tokenizers import decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import BertConfig, BertForMaskedLM, BertTokenizerFast

from bench.backbone import DEFAULT_STEPS, DEMO_DIR, rebuild_command, sha256
from tasks import synthetic

WORLD_SEED = 0  # the demo suite's world; the lexicons do not depend on it (see tasks.synthetic)
ARCHITECTURE = {
    "hidden_size": 128,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "intermediate_size": 512,
    "max_position_embeddings": 128,
    # Relative positions: with learned absolute ones the model sat on the unigram plateau for
    # thousands of steps on this text (measured: held-out loss 5.1 after 800 steps vs 3.6), and
    # what it learned leaned on absolute positions, so the second sentence of a pair (NLI) or
    # a long row was read badly. Standard BertConfig option; attention then runs "eager".
    "position_embedding_type": "relative_key",
}
VOCAB_SIZE = 6000
TOKENIZER_SENTENCES = 40_000  # per pretraining language
TOKENS_PER_STEP = 4096
# (share of the steps, row length): mostly 64-token rows, then 128-token rows so that the
# relative distances up to the longest input (max_position_embeddings) are trained too.
LENGTH_SCHEDULE = ((0.8, 64), (0.2, 128))
LR, BETAS, WEIGHT_DECAY, WARMUP = 1e-3, (0.9, 0.98), 0.01, 100
MASK_RATE = 0.15
PHASE_OFFSET = 10**8  # text stream distance between the phases' sentences
HELDOUT_OFFSET = 10**9  # text stream position of the held-out sentences, far from training text
HELDOUT_ROWS, HELDOUT_LEN = 64, 128  # per language
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]

# ---------------------------------------------------------------------------------------------
# Building


def train_tokenizer(sentences: list[str]) -> BertTokenizerFast:
    """WordPiece on the pretraining text, cased (capitals mark names in most demo languages)."""
    tok = tokenizers.Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=False, strip_accents=False)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(vocab_size=VOCAB_SIZE, special_tokens=SPECIAL_TOKENS)
    # Every ASCII letter and digit, word-initial and word-internal, seen or not: an unseen
    # language spelled with a letter the pretraining text lacks would otherwise turn whole words
    # into [UNK] (WordPiece has no byte fallback).
    alphabet = string.ascii_letters + string.digits
    tok.train_from_iterator([*sentences, " ".join(c + "a" + c for c in alphabet)], trainer)
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
    return BertTokenizerFast(
        tokenizer_object=tok, do_lower_case=False, strip_accents=False, model_max_length=128
    )


def packed_sequences(
    tokenizer: BertTokenizerFast, language: str, n: int, *, length: int, offset: int = 0
) -> torch.Tensor:
    """`n` rows of [CLS] + whole sentences, each closed by [SEP], padded to `length`.

    Rows start at sentence starts, never mid-sentence, as downstream inputs do; padding costs
    about a tenth of a row.
    """
    world = synthetic.world(WORLD_SEED)
    rows: list[list[int]] = []
    row = [tokenizer.cls_token_id]
    chunk = 2000
    while len(rows) < n:
        sentences = world.text(language, chunk, offset=offset)
        offset += chunk
        for ids in tokenizer(sentences, add_special_tokens=False)["input_ids"]:
            ids = [*ids[: length - 2], tokenizer.sep_token_id]
            if len(row) + len(ids) > length:
                rows.append(row + [tokenizer.pad_token_id] * (length - len(row)))
                row = [tokenizer.cls_token_id]
            row.extend(ids)
    return torch.tensor(rows[:n], dtype=torch.long)


def mask_tokens(
    ids: torch.Tensor, tokenizer: BertTokenizerFast, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """BERT masking (15%: 80% [MASK], 10% random, 10% kept): (inputs, positions, labels)."""
    special = torch.zeros_like(ids, dtype=torch.bool)
    for token_id in tokenizer.all_special_ids:
        special |= ids == token_id
    chosen = (torch.rand(ids.shape, generator=generator) < MASK_RATE) & ~special
    inputs = ids.clone()
    u = torch.rand(ids.shape, generator=generator)
    inputs[chosen & (u < 0.8)] = tokenizer.mask_token_id
    randomised = chosen & (u >= 0.8) & (u < 0.9)
    first_regular = len(SPECIAL_TOKENS)  # special tokens come first in the vocabulary
    random_ids = torch.randint(first_regular, len(tokenizer), ids.shape, generator=generator)
    inputs[randomised] = random_ids[randomised]
    return inputs, chosen.nonzero(as_tuple=True), ids[chosen]


def mlm_loss(
    model: BertForMaskedLM, inputs: torch.Tensor, positions: tuple, labels: torch.Tensor
) -> torch.Tensor:
    # Run the vocabulary projection only where a prediction is scored (15% of positions): the
    # 6k-way output layer is most of the cost of a model this small.
    mask = (inputs != model.config.pad_token_id).long()
    hidden = model.bert(input_ids=inputs, attention_mask=mask).last_hidden_state
    logits = model.cls(hidden[positions])
    return torch.nn.functional.cross_entropy(logits.float(), labels)


def _bf16_supported() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


@torch.no_grad()
def heldout_loss(model: BertForMaskedLM, tokenizer: BertTokenizerFast, language: str) -> float:
    """Mean MLM loss on held-out text with a fixed masking, comparable across builds."""
    model.eval()
    ids = packed_sequences(
        tokenizer, language, HELDOUT_ROWS, length=HELDOUT_LEN, offset=HELDOUT_OFFSET
    )
    inputs, positions, labels = mask_tokens(ids, tokenizer, torch.Generator().manual_seed(1234))
    return mlm_loss(model, inputs, positions, labels).item()


def build_demo(
    out_dir: Path = DEMO_DIR, *, steps: int = DEFAULT_STEPS, seed: int = 0, progress: bool = True
) -> dict:
    """Pretrain the demo backbone, write it (atomically) to `out_dir`, return the build record."""
    if steps <= WARMUP:
        raise ValueError(f"steps must exceed the {WARMUP} warm-up steps, got {steps}")
    out_dir = Path(out_dir)
    started = time.monotonic()
    torch.manual_seed(seed)
    log = (lambda msg: print(msg, file=sys.stderr, flush=True)) if progress else (lambda msg: None)
    languages = synthetic.PRETRAIN_LANGUAGES
    world = synthetic.world(WORLD_SEED)

    log(f"training the tokenizer on {', '.join(languages)}")
    text = [s for lang in languages for s in world.text(lang, TOKENIZER_SENTENCES)]
    tokenizer = train_tokenizer(text)

    generator = torch.Generator().manual_seed(seed)
    phases = []  # (first step, rows per batch, rows in the order they are used)
    first = 0
    for i, (share, length) in enumerate(LENGTH_SCHEDULE):
        n_steps = steps - first if i == len(LENGTH_SCHEDULE) - 1 else round(share * steps)
        rows_per_batch = TOKENS_PER_STEP // length
        per_language = math.ceil(n_steps * rows_per_batch / len(languages))
        log(f"packing {per_language} rows of {length} tokens per language")
        data = torch.cat(
            [
                packed_sequences(
                    tokenizer, lang, per_language, length=length, offset=i * PHASE_OFFSET
                )
                for lang in languages
            ]
        )
        # one permutation mixes the languages within every batch
        phases.append((first, rows_per_batch, data[torch.randperm(len(data), generator=generator)]))
        first += n_steps

    config = BertConfig(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        attn_implementation="eager",
        **ARCHITECTURE,
    )
    model = BertForMaskedLM(config)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=LR, betas=BETAS, weight_decay=WEIGHT_DECAY, eps=1e-6
    )
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / WARMUP, max(0.0, (steps - s) / (steps - WARMUP)))
    )
    bf16 = _bf16_supported()
    model.train()
    window, tick = 0.0, time.monotonic()
    for step in range(steps):
        start, rows_per_batch, data = next(p for p in reversed(phases) if p[0] <= step)
        batch = data[(step - start) * rows_per_batch : (step - start + 1) * rows_per_batch]
        inputs, positions, labels = mask_tokens(batch, tokenizer, generator)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = mlm_loss(model, inputs, positions, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        window += loss.item()
        if (step + 1) % 100 == 0 or step + 1 == steps:
            elapsed = time.monotonic() - tick
            n = (step % 100) + 1
            log(
                f"step {step + 1}/{steps} loss {window / n:.3f} "
                f"{n * TOKENS_PER_STEP / elapsed:.0f} tokens/s (with padding)"
            )
            window, tick = 0.0, time.monotonic()

    losses = {lang: round(heldout_loss(model, tokenizer, lang), 4) for lang in synthetic.LANGUAGES}
    log("held-out MLM loss: " + ", ".join(f"{k} {v:.3f}" for k, v in losses.items()))
    partial = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial, safe_serialization=True)
    tokenizer.save_pretrained(partial)
    record = {
        "command": rebuild_command(steps, seed),
        "steps": steps,
        "seed": seed,
        "world_seed": WORLD_SEED,
        "world_version": synthetic.WORLD_VERSION,
        "pretrain_languages": list(languages),
        "mlm_loss_heldout": losses,
        "mlm_loss_uniform": round(math.log(len(tokenizer)), 4),
        "tokens_seen": steps * TOKENS_PER_STEP,
        "training": {
            "tokens_per_step": TOKENS_PER_STEP,
            "length_schedule": [list(phase) for phase in LENGTH_SCHEDULE],
            "lr": LR,
            "betas": list(BETAS),
            "weight_decay": WEIGHT_DECAY,
            "warmup": WARMUP,
            "mask_rate": MASK_RATE,
            "vocab_size": len(tokenizer),
            "bf16_autocast": bf16,
        },
        "wall_time_s": round(time.monotonic() - started, 1),
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "tokenizers": tokenizers.__version__,
            "python": sys.version.split()[0],
        },
        "sha256": sha256(partial / "model.safetensors"),
    }
    (partial / "build.json").write_text(json.dumps(record, indent=2) + "\n")
    shutil.rmtree(out_dir, ignore_errors=True)
    partial.rename(out_dir)
    log(f"wrote {out_dir} in {record['wall_time_s']} s")
    return record
