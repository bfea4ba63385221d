"""Voice input evaluation: word error rate and speed of each speech backend and model, and what a transcript
does to retrieval compared with the typed text.

`recagent eval voice --n 50 --json OUT` takes N seeker turns of ReDial's dev dialogues (a fixed random
sample), speaks each with espeak-ng (16 kHz wav), transcribes it with faster-whisper and openai-whisper on
Whisper tiny.en and base, and reports per backend and model: word error rate, real-time factor (transcription
seconds over audio seconds; model loading reported apart), how many transcripts the two backends agree on
word for word, and, searching the movies catalog with the typed text and with the transcript, the mean
overlap of the two top 10s and Recall@10 of both against the movie the recommender suggests next.

`--sets movies,fashion` adds N fashion requests made from products' own fields ("Black sports shoes for men"),
and `--vocabulary both` runs every config without the catalog's vocabulary (decoded as before it) and with it
(`tools/speech.py`, `catalog_vocabulary`), side by side on the same clips.
"""

from __future__ import annotations

import csv
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from recagent.tools import speech
from recagent.tools.catalog import load_catalog
from recagent.tools.datasets.redial import MENTION, render
from recagent.tools.errors import AudioError, StoreError
from recagent.tools.index import CatalogIndex
from recagent.tools.models import resolve_model
from recagent.tools.settings import Settings
from recagent.tools.text import plain_words

MODELS = ("whisper-tiny-en", "whisper-base")
BACKENDS = ("faster-whisper", "openai-whisper")
MIN_WORDS = 4
# A turn made only of these words is small talk, not a request.
GREETING_WORDS = set(
    """hi hello hey hiya howdy there how are you doing today is it going good morning afternoon
evening night well im i am fine great thanks thank so much bye goodbye have a nice day too and what about your
ok okay yes no sure cool awesome welcome nice to meet chat chatting with talking talk ya see later soon take care
for the all now will help suggestions bye hope""".split()
)
# WERs this close count as equally accurate (then speed decides): faster-whisper int8's WER moved by 1.3 points
# between two runs of the same 50 turns (its transcripts vary a little from process to process).
SAME_ACCURACY = 0.015
APOSTROPHES = "'’"  # dropped before comparing words: "don't" and "dont" are the same word


# ---- the turns -----------------------------------------------------------------------------------------


def is_small_talk(text: str) -> bool:
    """True when every word of the turn is a greeting or pleasantry."""
    return all(w in GREETING_WORDS for w in plain_words(text, drop=APOSTROPHES).split())


def seeker_turns(data: Path, n: int = 50, seed: int = 0) -> list[dict]:
    """N seeker requests from redial/dev.jsonl (a seeded sample, in file order), each with the movies (MovieLens
    ids) that the recommender's next message suggests."""
    redial = data / "redial"
    with open(redial / "movies_with_mentions.csv", newline="") as fh:
        names = {row["movieId"]: row["movieName"] for row in csv.DictReader(fh)}
    with open(redial / "redial_to_movielens.csv", newline="") as fh:
        to_movielens = {row["redialMovieId"]: row["mlMovieId"] for row in csv.DictReader(fh) if row["mlMovieId"]}
    candidates = []
    with open(redial / "dev.jsonl") as fh:
        for line in fh:
            dialogue = json.loads(line)
            questions = dialogue.get("respondentQuestions") or dialogue.get("initiatorQuestions") or {}
            questions = questions if isinstance(questions, dict) else {}
            messages = dialogue["messages"]
            for i, message in enumerate(messages):
                if message["senderWorkerId"] != dialogue["initiatorWorkerId"]:
                    continue
                text = render(message["text"], dialogue, names=names, spoken=True)
                if len(plain_words(text, drop=APOSTROPHES).split()) < MIN_WORDS or is_small_talk(text):
                    continue
                reply = next(
                    (m for m in messages[i + 1 :] if m["senderWorkerId"] == dialogue["respondentWorkerId"]), None
                )
                suggested = [
                    to_movielens[r]
                    for r in MENTION.findall(reply["text"] if reply else "")
                    if (questions.get(r) or {}).get("suggested") == 1 and r in to_movielens
                ]
                candidates.append(
                    {
                        "conversation": dialogue["conversationId"],
                        "message": message["messageId"],
                        "text": text,
                        "targets": list(dict.fromkeys(suggested)),
                    }
                )
    chosen = sorted(random.Random(seed).sample(range(len(candidates)), min(n, len(candidates))))
    return [candidates[i] for i in chosen]


# Fashion requests as a shopper says them, filled from one product's own fields.
FASHION_TEMPLATES = (
    "{colour} {types} for {gender}",
    "I am looking for {colour} {types} for {gender}.",
    "Show me some {usage} {types} in {colour}.",
    "Do you have any {colour} {types} for {season}?",
    "I need {usage} {types} for {gender}, preferably {colour}.",
    "Something like {colour} {types}, but cheaper.",
)
# articleType values that a shopper says otherwise
SAID_TYPES = {"tshirts": "t-shirts", "innerwear vests": "vests", "perfume and body mist": "perfumes"}
SAID_GENDERS = {"unisex": "everyone"}
SAID_COLOURS = {"multi": "multicoloured"}
NOT_ASKED_FOR = {"free gifts", "accessory gift set"}
MIN_PRODUCTS = 5


def fashion_requests(data: Path, n: int = 50, seed: int = 0) -> list[dict]:
    """N spoken-style requests for the fashion catalog, each from the type, colour, gender, usage and season of a
    seeded random product of a random type (types with MIN_PRODUCTS products or more; products with a missing or
    'NA' field are skipped)."""
    with open(data / "fashion" / "products.csv", newline="") as fh:
        rows = [
            r
            for r in csv.DictReader(fh)
            if all(r.get(k, "").strip() not in ("", "NA") for k in ("articleType", "baseColour", "usage", "gender"))
        ]
    by_type: dict[str, list[dict]] = {}
    for row in rows:
        by_type.setdefault(row["articleType"].strip().lower(), []).append(row)
    kinds = sorted(k for k, group in by_type.items() if len(group) >= MIN_PRODUCTS and k not in NOT_ASKED_FOR)
    rng = random.Random(seed)
    requests = []
    for _ in range(n):  # a type first, then a product of it: every kind of product is asked for, not mostly shirts
        kind = rng.choice(kinds)
        row = rng.choice(by_type[kind])
        fields = {
            "types": SAID_TYPES.get(kind, kind),
            "colour": SAID_COLOURS.get(row["baseColour"].strip().lower(), row["baseColour"].strip().lower()),
            "gender": SAID_GENDERS.get(row["gender"].strip().lower(), row["gender"].strip().lower()),
            "usage": row["usage"].strip().lower(),
            "season": row.get("season", "").strip().lower() or "summer",
        }
        template = rng.choice(FASHION_TEMPLATES)
        if fields["usage"] in fields["types"]:  # "casual casual shoes"
            template = template.replace("{usage} ", "")
        text = template.format(**fields)
        requests.append({"conversation": "fashion", "message": row["id"], "text": text[0].upper() + text[1:]})
    return requests


# Requests in the other languages recagent reads (agent/understanding.py), as people type them to a recommender.
OTHER_LANGUAGES = {
    "fr": [
        "Je cherche un film d'horreur des années quatre-vingt",
        "Un film d'animation pour mes enfants",
        "Je voudrais une comédie romantique",
        "Des chaussures de sport blanches pour femme",
        "Un sac à main noir pour femme",
        "Une montre pour homme",
        "Un film de guerre, pas trop violent",
        "Quelque chose de drôle pour ce soir",
    ],
    "es": [
        "Quiero una comedia romántica de los años noventa",
        "Busco un reloj para hombre",
        "Una película de aventuras para toda la familia",
        "Zapatillas negras para mujer",
        "Una película de miedo sobre un tiburón",
        "Busco una camisa azul para hombre",
        "Una película de ciencia ficción sobre el espacio",
        "Algo divertido para ver esta noche",
    ],
    "de": [
        "Ich suche einen Science-Fiction-Film über Außerirdische",
        "Schwarze Sportschuhe für Herren",
        "Ein lustiger Film für Kinder",
        "Ein Krimi aus den neunziger Jahren",
        "Eine Handtasche für Damen, aber nicht schwarz",
        "Ein Kriegsfilm über Soldaten",
        "Ich möchte einen romantischen Film",
        "Ein weißes Hemd für Herren",
    ],
    "it": [
        "Vorrei un film spaventoso su uno squalo",
        "Una borsetta marrone da donna",
        "Cerco un film di animazione per bambini",
        "Una commedia divertente per stasera",
        "Scarpe da ginnastica bianche per uomo",
        "Un film di fantascienza degli anni ottanta",
        "Un orologio nero per uomo",
        "Un film romantico da vedere insieme",
    ],
}


def speak(text: str, wav: Path, voice_name: str = "en") -> Path:
    """Speak text with espeak-ng (140 words a minute, as the tests do; `voice_name`: its language) into a 16 kHz
    mono wav."""
    voice = subprocess.run(
        ["espeak-ng", "-v", voice_name, "-s", "140", "--stdout", "--stdin"],
        input=text.encode(),
        capture_output=True,
        check=True,
    ).stdout
    subprocess.run(["sox", "-t", "wav", "-", "-r", "16000", "-c", "1", str(wav)], input=voice, check=True)
    return wav


# ---- measures ------------------------------------------------------------------------------------------


def edit_distance(reference: list[str], hypothesis: list[str]) -> int:
    """Word-level Levenshtein distance (substitutions, insertions, deletions)."""
    previous = list(range(len(hypothesis) + 1))
    for i, ref_word in enumerate(reference, 1):
        current = [i]
        for j, hyp_word in enumerate(hypothesis, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ref_word != hyp_word)))
        previous = current
    return previous[-1]


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(word edits, reference words) after reducing both texts to plain words (apostrophes dropped)."""
    ref, hyp = plain_words(reference, drop=APOSTROPHES).split(), plain_words(hypothesis, drop=APOSTROPHES).split()
    return edit_distance(ref, hyp), len(ref)


def overlap(a: list[str], b: list[str]) -> float:
    """The fraction of a's items that b also holds."""
    return len(set(a) & set(b)) / len(a) if a else 0.0


def recall(top: list[str], targets: list[str]) -> list[float]:
    """One 0/1 per target movie: is it in the top list?"""
    return [float(t in top) for t in targets]


# ---- the run -------------------------------------------------------------------------------------------


def _movies_index(settings: Settings) -> CatalogIndex:
    """The movies index, built with the project's own code if this home has none yet."""
    index = CatalogIndex("movies", settings)
    try:
        if index.count() > 0:
            return index
    except StoreError:
        pass
    print("building the movies index (once)", file=sys.stderr)
    index.index(load_catalog("movies", settings), progress=True)
    return index


VOCABULARY_CHOICES = ("both", "on", "off")
LANGUAGE_CHOICES = ("en", "auto", "both")
CATALOG_SETS = ("movies", "fashion")
SETS = CATALOG_SETS + tuple(OTHER_LANGUAGES)


def _configs(
    models: Sequence[str], backends: Sequence[str], float32: bool, vocabulary: str = "off", language: str = "en"
) -> list[dict]:
    """Every backend x model (x float32), each without the catalog vocabulary (decoded as before it), with it
    (`tools/speech.py`: then without timestamp tokens), or both side by side; and heard as English (as before) or
    in the language detected among those recagent reads (`auto`), or both."""
    configs: list[dict] = [
        {"backend": b, "model": m, "compute_type": "int8" if b == "faster-whisper" else "float32"}
        for m in models
        for b in backends
    ]
    if float32 and "faster-whisper" in backends:  # shows whether the int8 weights explain any disagreement
        configs += [{"backend": "faster-whisper", "model": m, "compute_type": "float32"} for m in models]
    variants = {"off": [False], "on": [True], "both": [False, True]}[vocabulary]
    languages = {"en": ["en"], "auto": ["auto"], "both": ["en", "auto"]}[language]
    configs = [{**c, "vocabulary": v, "language": lang} for c in configs for v in variants for lang in languages]
    for c in configs:
        c["name"] = (
            f"{c['backend']} {c['model']}"
            + (" float32" if c["backend"] == "faster-whisper" and c["compute_type"] == "float32" else "")
            + (" +vocabulary" if c["vocabulary"] else "")
            + (" +auto language" if c["language"] == "auto" else "")
        )
    return configs


def _load(config: dict, settings: Settings) -> tuple[speech.FasterWhisper | speech.OpenAIWhisper, float, float]:
    """Load one recognizer; (recognizer, seconds to convert the checkpoint, seconds to load the model)."""
    convert_s = 0.0
    if config["backend"] == "openai-whisper":  # convert first (once per cache) so that load time is loading only
        started = time.perf_counter()
        speech._openai_checkpoint(resolve_model(config["model"], settings), config["model"], settings)
        convert_s = time.perf_counter() - started
    started = time.perf_counter()
    recognizer = speech.speech_recognizer(settings, config["model"], config["backend"], config["compute_type"])
    return recognizer, convert_s, time.perf_counter() - started


def run_voice_eval(
    settings: Settings,
    n: int = 50,
    models: Sequence[str] = MODELS,
    backends: Sequence[str] = BACKENDS,
    float32: bool = True,
    seed: int = 0,
    repeats: int = 1,
    sets: Sequence[str] = ("movies",),
    vocabulary: str = "off",
    language: str = "en",
) -> dict:
    """Measure every backend x model on N spoken requests of each set (movies: ReDial seeker turns; fashion:
    requests made from products' fields), without and/or with the catalog's vocabulary (`vocabulary`: off, on,
    both); print the table and return the figures. Retrieval (overlap, Recall@10) is measured on movie turns."""
    data = settings.require_data()
    unknown = set(sets) - set(SETS)
    if unknown or vocabulary not in VOCABULARY_CHOICES or language not in LANGUAGE_CHOICES:
        raise ValueError(
            f"sets are {', '.join(SETS)}; vocabulary is one of {', '.join(VOCABULARY_CHOICES)}; language one of "
            f"{', '.join(LANGUAGE_CHOICES)}"
        )
    turns: list[dict] = []
    for name in sets:
        if name in OTHER_LANGUAGES:  # a fixed list, spoken by espeak-ng's voice of that language
            chosen = [
                {"conversation": name, "message": str(i), "text": text, "espeak_voice": name}
                for i, text in enumerate(OTHER_LANGUAGES[name][:n])
            ]
        else:
            chosen = seeker_turns(data, n, seed) if name == "movies" else fashion_requests(data, n, seed)
        turns += [{**t, "set": name} for t in chosen]
    index = _movies_index(settings) if "movies" in sets else None
    prompts = {name: speech.catalog_vocabulary(name, settings) for name in sets if name in CATALOG_SETS}
    configs = _configs(models, backends, float32, vocabulary, language)
    recognizers: dict[str, speech.FasterWhisper | speech.OpenAIWhisper] = {}
    for config in configs:
        twin = next((c for c in configs if c["name"] in recognizers and _same_weights(c, config)), None)
        if twin:  # the same recognizer, told the vocabulary or not, English or not: loaded once
            recognizers[config["name"]] = recognizers[twin["name"]]
            config["convert_s"], config["load_s"] = twin["convert_s"], twin["load_s"]
            continue
        recognizers[config["name"]], config["convert_s"], config["load_s"] = _load(config, settings)
        print(
            f"loaded {config['name']} in {config['load_s']:.2f} s (checkpoint conversion {config['convert_s']:.2f} s)",
            file=sys.stderr,
            flush=True,
        )

    def hear(config: dict, samples: np.ndarray, catalog: str) -> str:
        recognizer = recognizers[config["name"]]
        vocabulary = prompts.get(catalog) if config["vocabulary"] else None
        return recognizer.transcribe(samples, vocabulary, config["language"])

    with tempfile.TemporaryDirectory() as folder:
        warm = speech.load_audio(str(speak("I would like a funny movie for tonight.", Path(folder) / "warm.wav")))
        for config in configs:  # first calls allocate buffers: keep them out of the timings
            hear(config, speech.speech_only(warm), sets[0])
        for number, turn in enumerate(tqdm(turns, desc="spoken turns", unit="turn", file=sys.stderr)):
            wav = speak(turn["text"], Path(folder) / f"turn{number}.wav", turn.get("espeak_voice", "en"))
            audio = speech.load_audio(str(wav))
            turn["audio_s"] = round(len(audio) / 16000, 3)
            text_top = [h.id for h in index.search(turn["text"], k=10)] if index and turn["set"] == "movies" else []
            if turn["set"] == "movies":
                turn["text_top10"] = text_top
                turn["text_recall"] = recall(text_top, turn["targets"])
            turn["voice"] = {}
            # Configs take turns on each clip, so that other load on the machine slows them alike.
            for config in configs:
                timings = []
                for _ in range(repeats):  # other work on a shared machine only ever adds time: keep the fastest
                    started, cpu_started = time.perf_counter(), time.process_time()
                    try:
                        transcript = hear(config, speech.speech_only(audio), turn["set"])
                    except AudioError:
                        transcript = ""
                    timings.append((time.perf_counter() - started, time.process_time() - cpu_started))
                seconds, cpu_seconds = min(timings)  # CPU seconds count every thread of this process
                edits, words = word_errors(turn["text"], transcript)
                heard = {
                    "transcript": transcript,
                    "seconds": round(seconds, 3),
                    "cpu_seconds": round(cpu_seconds, 3),
                    "edits": edits,
                    "words": words,
                }
                if turn["set"] == "movies" and index is not None:
                    top = [h.id for h in index.search(transcript, k=10)] if transcript else []
                    heard.update(top10=top, overlap10=overlap(text_top, top), recall=recall(top, turn["targets"]))
                turn["voice"][config["name"]] = heard

    results = {
        "turns_n": len(turns),
        "sets": list(sets),
        "seed": seed,
        "repeats": repeats,
        "source": "redial/dev.jsonl seeker turns (movies), fashion/products.csv requests (fashion), the requests of "
        "OTHER_LANGUAGES (fr, es, de, it); espeak-ng -s 140 with the voice of the language",
        "vocabulary_prompts": prompts,
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "audio_seconds": round(sum(t["audio_s"] for t in turns), 1),
        "configs": [],
        "turns": turns,
    }
    movie_turns = [t for t in turns if t["set"] == "movies"]
    text_recalls = [r for t in movie_turns for r in t["text_recall"]]
    results["text_recall10"] = round(sum(text_recalls) / len(text_recalls), 3) if text_recalls else None
    results["recall_targets"] = len(text_recalls)
    results["recall_turns"] = sum(bool(t["targets"]) for t in movie_turns)
    for name in sets:
        in_set = [t for t in turns if t["set"] == name]
        audio_s = sum(t["audio_s"] for t in in_set)
        for config in configs:
            results["configs"].append(_summary(config, configs, in_set, audio_s, name))
    results["recommended"] = recommend([s for s in results["configs"] if s["set"] == sets[0]])
    print(format_table(results))
    return results


def _same_weights(a: dict, b: dict) -> bool:
    return (a["backend"], a["model"], a["compute_type"]) == (b["backend"], b["model"], b["compute_type"])


def _summary(config: dict, configs: list[dict], turns: list[dict], audio_s: float, name: str) -> dict:
    """One config's figures over one set's turns."""
    runs = [t["voice"][config["name"]] for t in turns]
    twin = _twin(config, configs)
    recalls = [r for run in runs for r in run.get("recall", [])]
    summary = {
        **config,
        "set": name,
        "turns_n": len(turns),
        "edits": sum(r["edits"] for r in runs),
        "words": sum(r["words"] for r in runs),
        "wer": round(sum(r["edits"] for r in runs) / max(1, sum(r["words"] for r in runs)), 4),
        "exact_transcripts": sum(r["edits"] == 0 for r in runs),
        "rtf": round(sum(r["seconds"] for r in runs) / audio_s, 3),
        # the median turn's RTF barely moves when other work on the machine slows a few turns
        "rtf_median": round(float(np.median([r["seconds"] / t["audio_s"] for r, t in zip(runs, turns)])), 3),
        "cpu_rtf": round(sum(r["cpu_seconds"] for r in runs) / audio_s, 3),
        "seconds_per_turn": round(sum(r["seconds"] for r in runs) / len(runs), 3),
        "overlap10": round(sum(r["overlap10"] for r in runs) / len(runs), 3) if "overlap10" in runs[0] else None,
        "recall10": round(sum(recalls) / len(recalls), 3) if recalls else None,
        "load_s": round(config["load_s"], 2),
        "convert_s": round(config["convert_s"], 2),
    }
    if twin:
        summary["identical_to"] = twin["name"]
        summary["identical"] = sum(
            t["voice"][config["name"]]["transcript"] == t["voice"][twin["name"]]["transcript"] for t in turns
        )
    return summary


def _twin(config: dict, configs: list[dict]) -> dict | None:
    """The other backend's config on the same model, vocabulary and language: openai-whisper's for faster-whisper,
    and back."""
    same = [
        c
        for c in configs
        if (c["model"], c["vocabulary"], c.get("language"))
        == (config["model"], config["vocabulary"], config.get("language"))
    ]
    if config["backend"] == "openai-whisper":
        return next(
            (c for c in same if c["backend"] == "faster-whisper" and c["compute_type"] == "int8"),
            None,
        )
    return next((c for c in same if c["backend"] == "openai-whisper"), None)


def recommend(summaries: list[dict]) -> dict:
    """Accuracy first, then speed: the model with the lowest mean WER, then its config using the least CPU time
    among those whose WER is within SAME_ACCURACY of that model's best."""
    by_model: dict[str, list[dict]] = {}
    for s in summaries:
        by_model.setdefault(s["model"], []).append(s)
    # Every backend runs the same weights, so a model's accuracy is judged over all its runs.
    model = min(by_model, key=lambda m: sum(s["wer"] for s in by_model[m]) / len(by_model[m]))
    best = min(s["wer"] for s in by_model[model])
    choice = min((s for s in by_model[model] if s["wer"] <= best + SAME_ACCURACY), key=lambda s: s["cpu_rtf"])
    return {
        "backend": choice["backend"],
        "model": model,
        "compute_type": choice["compute_type"],
        "rule": f"{model} has the lowest mean WER; its fastest run (CPU seconds per audio second) within "
        f"{SAME_ACCURACY:.1%} of its best WER ({best:.1%})",
    }


def format_table(results: dict) -> str:
    """The per-set, per-config figures as a Markdown table, then the text path's Recall@10."""
    lines = [
        "| set | backend | model | vocabulary | WER | exact transcripts | RTF | median RTF | CPU s / audio s | "
        "s per turn | load s | identical to the other backend | overlap@10 text vs voice | Recall@10 voice |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in results["configs"]:
        n = s["turns_n"]
        backend = s["backend"] + (
            " (float32)" if s["backend"] == "faster-whisper" and s["compute_type"] == "float32" else ""
        )
        same = f"{s['identical']}/{n}" if "identical" in s else "-"
        lines.append(
            f"| {s['set']} | {backend} | {s['model']} | {'on' if s['vocabulary'] else 'off'} | {s['wer']:.1%} | "
            f"{s['exact_transcripts']}/{n} | {s['rtf']:.3f} | {s['rtf_median']:.3f} | {s['cpu_rtf']:.3f} | "
            f"{s['seconds_per_turn']:.2f} | {s['load_s']:.2f} | {same} | "
            f"{'-' if s['overlap10'] is None else format(s['overlap10'], '.3f')} | "
            f"{s['recall10'] if s['recall10'] is not None else '-'} |"
        )
    if results["recall_targets"]:
        lines.append(
            f"\ntext path Recall@10: {results['text_recall10']} over {results['recall_targets']} suggested movies "
            f"in {results['recall_turns']} movie turns; audio {results['audio_seconds']} s in all"
        )
    rec = results["recommended"]
    lines.append(f"recommended default: {rec['backend']} {rec['model']} {rec['compute_type']} ({rec['rule']})")
    return "\n".join(lines)
