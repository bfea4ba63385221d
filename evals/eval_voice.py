"""Voice input evaluation: word error rate and speed of each speech backend and model, and what a transcript
does to retrieval compared with the typed text.

`recagent eval voice --n 50 --json OUT` takes N seeker turns of ReDial's dev dialogues (a fixed random
sample), speaks each with espeak-ng (16 kHz wav), transcribes it with faster-whisper and openai-whisper on
Whisper tiny.en and base, and reports per backend and model: word error rate, real-time factor (transcription
seconds over audio seconds; model loading reported apart), how many transcripts the two backends agree on
word for word, and, searching the movies catalog with the typed text and with the transcript, the mean
overlap of the two top 10s and Recall@10 of both against the movie the recommender suggests next.
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


def speak(text: str, wav: Path) -> Path:
    """Speak text with espeak-ng (140 words a minute, as the tests do) into a 16 kHz mono wav."""
    voice = subprocess.run(
        ["espeak-ng", "-s", "140", "--stdout", "--stdin"], input=text.encode(), capture_output=True, check=True
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


def _configs(models: Sequence[str], backends: Sequence[str], float32: bool) -> list[dict]:
    configs = [
        {"backend": b, "model": m, "compute_type": "int8" if b == "faster-whisper" else "float32"}
        for m in models
        for b in backends
    ]
    if float32 and "faster-whisper" in backends:  # shows whether the int8 weights explain any disagreement
        configs += [{"backend": "faster-whisper", "model": m, "compute_type": "float32"} for m in models]
    for c in configs:
        c["name"] = f"{c['backend']} {c['model']}" + (
            " float32" if c["backend"] == "faster-whisper" and c["compute_type"] == "float32" else ""
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
) -> dict:
    """Measure every backend x model on N spoken seeker turns; print the table and return the figures."""
    data = settings.require_data()
    turns = seeker_turns(data, n, seed)
    index = _movies_index(settings)
    configs = _configs(models, backends, float32)
    recognizers = {}
    for config in configs:
        recognizers[config["name"]], config["convert_s"], config["load_s"] = _load(config, settings)
        print(
            f"loaded {config['name']} in {config['load_s']:.2f} s (checkpoint conversion {config['convert_s']:.2f} s)",
            file=sys.stderr,
            flush=True,
        )

    with tempfile.TemporaryDirectory() as folder:
        warm = speech.load_audio(str(speak("I would like a funny movie for tonight.", Path(folder) / "warm.wav")))
        for recognizer in recognizers.values():  # first calls allocate buffers: keep them out of the timings
            recognizer.transcribe(speech.speech_only(warm))
        for number, turn in enumerate(tqdm(turns, desc="spoken turns", unit="turn", file=sys.stderr)):
            audio = speech.load_audio(str(speak(turn["text"], Path(folder) / f"turn{number}.wav")))
            turn["audio_s"] = round(len(audio) / 16000, 3)
            text_top = [h.id for h in index.search(turn["text"], k=10)]
            turn["text_top10"] = text_top
            turn["text_recall"] = recall(text_top, turn["targets"])
            turn["voice"] = {}
            # Configs take turns on each clip, so that other load on the machine slows them alike.
            for config in configs:
                timings = []
                for _ in range(repeats):  # other work on a shared machine only ever adds time: keep the fastest
                    started, cpu_started = time.perf_counter(), time.process_time()
                    try:
                        transcript = recognizers[config["name"]].transcribe(speech.speech_only(audio))
                    except AudioError:
                        transcript = ""
                    timings.append((time.perf_counter() - started, time.process_time() - cpu_started))
                seconds, cpu_seconds = min(timings)  # CPU seconds count every thread of this process
                edits, words = word_errors(turn["text"], transcript)
                top = [h.id for h in index.search(transcript, k=10)] if transcript else []
                turn["voice"][config["name"]] = {
                    "transcript": transcript,
                    "seconds": round(seconds, 3),
                    "cpu_seconds": round(cpu_seconds, 3),
                    "edits": edits,
                    "words": words,
                    "top10": top,
                    "overlap10": overlap(text_top, top),
                    "recall": recall(top, turn["targets"]),
                }

    results = {
        "turns_n": len(turns),
        "seed": seed,
        "repeats": repeats,
        "source": "redial/dev.jsonl seeker turns, espeak-ng -s 140",
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "audio_seconds": round(sum(t["audio_s"] for t in turns), 1),
        "configs": [],
        "turns": turns,
    }
    text_recalls = [r for t in turns for r in t["text_recall"]]
    results["text_recall10"] = round(sum(text_recalls) / len(text_recalls), 3) if text_recalls else None
    results["recall_targets"] = len(text_recalls)
    results["recall_turns"] = sum(bool(t["targets"]) for t in turns)
    for config in configs:
        runs = [t["voice"][config["name"]] for t in turns]
        twin = _twin(config, configs)
        recalls = [r for run in runs for r in run["recall"]]
        summary = {
            **config,
            "wer": round(sum(r["edits"] for r in runs) / max(1, sum(r["words"] for r in runs)), 4),
            "exact_transcripts": sum(r["edits"] == 0 for r in runs),
            "rtf": round(sum(r["seconds"] for r in runs) / results["audio_seconds"], 3),
            # the median turn's RTF barely moves when other work on the machine slows a few turns
            "rtf_median": round(float(np.median([r["seconds"] / t["audio_s"] for r, t in zip(runs, turns)])), 3),
            "cpu_rtf": round(sum(r["cpu_seconds"] for r in runs) / results["audio_seconds"], 3),
            "seconds_per_turn": round(sum(r["seconds"] for r in runs) / len(runs), 3),
            "overlap10": round(sum(r["overlap10"] for r in runs) / len(runs), 3),
            "recall10": round(sum(recalls) / len(recalls), 3) if recalls else None,
            "load_s": round(config["load_s"], 2),
            "convert_s": round(config["convert_s"], 2),
        }
        if twin:
            summary["identical_to"] = twin["name"]
            summary["identical"] = sum(
                t["voice"][config["name"]]["transcript"] == t["voice"][twin["name"]]["transcript"] for t in turns
            )
        results["configs"].append(summary)
    results["recommended"] = recommend(results["configs"])
    print(format_table(results))
    return results


def _twin(config: dict, configs: list[dict]) -> dict | None:
    """The other backend's config on the same model: openai-whisper's for faster-whisper, and back."""
    if config["backend"] == "openai-whisper":
        return next(
            (
                c
                for c in configs
                if c["model"] == config["model"] and c["backend"] == "faster-whisper" and c["compute_type"] == "int8"
            ),
            None,
        )
    return next((c for c in configs if c["model"] == config["model"] and c["backend"] == "openai-whisper"), None)


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
    """The per-config figures as a Markdown table, then the text path's Recall@10."""
    lines = [
        "| backend | model | WER | exact transcripts | RTF | median RTF | CPU s / audio s | s per turn | load s | "
        "identical to the other backend | overlap@10 text vs voice | Recall@10 voice |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    n = results["turns_n"]
    for s in results["configs"]:
        backend = s["backend"] + (
            " (float32)" if s["backend"] == "faster-whisper" and s["compute_type"] == "float32" else ""
        )
        same = f"{s['identical']}/{n}" if "identical" in s else "-"
        lines.append(
            f"| {backend} | {s['model']} | {s['wer']:.1%} | {s['exact_transcripts']}/{n} | {s['rtf']:.3f} | "
            f"{s['rtf_median']:.3f} | {s['cpu_rtf']:.3f} | {s['seconds_per_turn']:.2f} | {s['load_s']:.2f} | "
            f"{same} | {s['overlap10']:.3f} | {s['recall10'] if s['recall10'] is not None else '-'} |"
        )
    lines.append(
        f"\ntext path Recall@10: {results['text_recall10']} over {results['recall_targets']} suggested movies "
        f"in {results['recall_turns']} of {n} turns; audio {results['audio_seconds']} s in all"
    )
    rec = results["recommended"]
    lines.append(f"recommended default: {rec['backend']} {rec['model']} {rec['compute_type']} ({rec['rule']})")
    return "\n".join(lines)
