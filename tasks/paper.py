"""The `paper` suite: Hyper-X's benchmark (Üstün et al., EMNLP 2022) on mBERT, from the hub.

NER is WikiANN (Rahimi et al. splits), POS is UD at release r2.7 (the paper's era) from the
treebanks' GitHub repositories, NLI is MultiNLI for English and AmericasNLI for its targets
(XNLI evaluates the other source languages), and MLM text is Wikipedia (the 2023-11-01 dump).
The sources are English (every task), Arabic (NER), Turkish and Chinese (POS); the targets are
the paper's 13 UD languages and the AmericasNLI languages that have a Wikipedia.

The budget is the reference code's (100,000 steps of 32 at length 256, 4,000 warm-up steps,
evaluation every 5,000), and the method defaults are the reference's for mBERT: a GPU's work.
The Plan (`python -m bench plan --suite paper --setting mixed`) needs no network; a run needs
the hub. Offline (HF_HUB_OFFLINE=1) it needs its backbone in the Hugging Face cache, its UD files
in the `datasets` cache, its labelled hub datasets there or under `$BENCH_HUB_MIRROR`, and its
Wikipedia text (streamed, so never cached) under `$BENCH_HUB_MIRROR`; what is missing stops it
with one line, and the hub is not asked.

Left out: the AmericasNLI languages without a Wikipedia (bzd, cni, hch, oto, shp, tar) would
have no MLM text, so Hyper-X could not train their embeddings; a suite file can add them with
local text. Chinese as a POS (not NER) source is this harness's choice: the paper's mixed
setting names Arabic NER and Turkish POS.
"""

from __future__ import annotations

from bench.config import TrainConfig
from bench.suites import SUITES, Suite
from bench.task import Kind
from tasks import formats, hub
from tasks.files import FileSource
from tasks.hub import HubPart, HubSource

BACKBONE = "google-bert/bert-base-multilingual-cased"
UD_TAG = "r2.7"
DUMP = "20231101"  # Wikipedia
WIKIANN_LABELS = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC")
ALL = ("train", "dev", "test")
TEST = ("test",)

# language (ISO 639-3): name, WikiANN config, UD treebank (repository, file prefix, splits),
# Wikipedia code. Mbya Guarani's treebank stands for Guarani, as in the paper.
LANGUAGES = {
    "eng": ("English", "en", ("UD_English-EWT", "en_ewt", ALL), "en"),
    "ara": ("Arabic", "ar", ("UD_Arabic-PADT", "ar_padt", ALL), "ar"),
    "tur": ("Turkish", "tr", ("UD_Turkish-IMST", "tr_imst", ALL), "tr"),
    "zho": ("Chinese", "zh", ("UD_Chinese-GSD", "zh_gsd", ALL), "zh"),
    "bre": ("Breton", "br", ("UD_Breton-KEB", "br_keb", TEST), "br"),
    "fao": ("Faroese", "fo", ("UD_Faroese-OFT", "fo_oft", TEST), "fo"),
    "grn": ("Guarani", "gn", ("UD_Mbya_Guarani-Thomas", "gun_thomas", TEST), "gn"),
    "hsb": ("Upper Sorbian", "hsb", ("UD_Upper_Sorbian-UFAL", "hsb_ufal", TEST), "hsb"),
    "isl": ("Icelandic", "is", ("UD_Icelandic-PUD", "is_pud", TEST), "is"),
    "kaz": ("Kazakh", "kk", ("UD_Kazakh-KTB", "kk_ktb", TEST), "kk"),
    "mlt": ("Maltese", "mt", ("UD_Maltese-MUDT", "mt_mudt", TEST), "mt"),
    "san": ("Sanskrit", "sa", ("UD_Sanskrit-UFAL", "sa_ufal", TEST), "sa"),
    "tam": ("Tamil", "ta", ("UD_Tamil-TTB", "ta_ttb", TEST), "ta"),
    "tgl": ("Tagalog", "tl", ("UD_Tagalog-TRG", "tl_trg", TEST), "tl"),
    "uig": ("Uyghur", "ug", ("UD_Uyghur-UDT", "ug_udt", TEST), "ug"),
    "yor": ("Yoruba", "yo", ("UD_Yoruba-YTB", "yo_ytb", TEST), "yo"),
    "yue": ("Cantonese", "zh-yue", ("UD_Cantonese-HK", "yue_hk", TEST), "zh-yue"),
    "aym": ("Aymara", None, None, "ay"),
    "nah": ("Nahuatl", None, None, "nah"),
    "quy": ("Ayacucho Quechua", None, None, "qu"),  # Wikipedia's Quechua is the macrolanguage
}
AMERICAS_NLI_CONFIGS = {"aym": "aym", "grn": "gn", "nah": "nah", "quy": "quy"}
XNLI_CONFIGS = {"ara": "ar", "tur": "tr", "zho": "zh"}


def paper_suite() -> Suite:
    """Hyper-X's benchmark on mBERT: WikiANN, UD r2.7, AmericasNLI, Wikipedia (needs the hub)."""
    ner = {lang: HubPart(hub.WIKIANN, row[1]) for lang, row in LANGUAGES.items() if row[1]}
    treebanks = {lang: row[2] for lang, row in LANGUAGES.items() if row[2]}
    nli = {
        "eng": HubPart(hub.MULTI_NLI, None),
        **{lang: HubPart(hub.XNLI, code, ("dev", "test")) for lang, code in XNLI_CONFIGS.items()},
        **{lang: HubPart(hub.AMERICAS_NLI, code) for lang, code in AMERICAS_NLI_CONFIGS.items()},
    }
    text = {lang: HubPart(hub.WIKIPEDIA, f"{DUMP}.{row[3]}") for lang, row in LANGUAGES.items()}
    return Suite(
        name="paper",
        description=f"Hyper-X's: mBERT, WikiANN, UD {UD_TAG}, AmericasNLI, Wikipedia (hub)",
        backbone=BACKBONE,
        sources={
            "ner": HubSource(Kind.TOKEN, ner, WIKIANN_LABELS),
            "pos": FileSource(Kind.TOKEN, hub.ud_files(treebanks, UD_TAG), formats.UPOS),
            "nli": HubSource(Kind.SENTENCE, nli, formats.NLI_LABELS),
            "mlm": HubSource(Kind.MLM, text),
        },
        main_source="eng",
        extra_sources={"ara": "ner", "tur": "pos", "zho": "pos"},
        targets=tuple(lang for lang in LANGUAGES if lang not in ("eng", "ara", "tur", "zho")),
        train=TrainConfig(
            max_steps=100_000, eval_every=5_000, batch_size=32, max_length=256, warmup_ratio=0.04
        ),
        language_names={lang: row[0] for lang, row in LANGUAGES.items()},
    )


SUITES.add("paper", paper_suite)
