"""A multinomial naive Bayes text classifier over a bag of words, in plain Python (no dependencies)."""

import csv
import io
import json
import math
import re
from collections import Counter, defaultdict

WORD = re.compile(r"[a-z0-9']+")


def tokens(text):
    return WORD.findall(text.lower())


def read_examples(path):
    """Rows of a CSV with ``text`` and ``label`` columns (a header row is required)."""
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(io.StringIO(handle.read()))
        if not reader.fieldnames or not {"text", "label"} <= set(reader.fieldnames):
            raise ValueError("the CSV needs a header with 'text' and 'label' columns")
        rows = [(row["text"], row["label"].strip()) for row in reader if row.get("text") and row.get("label")]
    if len({label for _, label in rows}) < 2:
        raise ValueError("the CSV needs examples of at least two labels")
    return rows


def fit(rows, smoothing=1.0, min_count=1):
    documents = Counter(label for _, label in rows)
    words = defaultdict(Counter)
    for text, label in rows:
        words[label].update(tokens(text))
    totals = Counter()
    for counter in words.values():
        totals.update(counter)
    vocabulary = sorted(word for word, count in totals.items() if count >= min_count)
    model = {"smoothing": smoothing, "vocabulary": vocabulary, "labels": {}}
    for label, count in sorted(documents.items()):
        kept = {word: words[label][word] for word in vocabulary if words[label][word]}
        model["labels"][label] = {
            "log_prior": math.log(count / len(rows)),
            "word_counts": kept,
            "total": sum(kept.values()),
        }
    return model


def predict(model, text):
    """``(label, {label: probability})`` for ``text``."""
    vocabulary = set(model["vocabulary"])
    alpha = model["smoothing"]
    scores = {}
    for label, stats in model["labels"].items():
        denominator = stats["total"] + alpha * len(vocabulary)
        score = stats["log_prior"]
        for word in tokens(text):
            if word in vocabulary:
                score += math.log((stats["word_counts"].get(word, 0) + alpha) / denominator)
        scores[label] = score
    top = max(scores.values())
    exp = {label: math.exp(score - top) for label, score in scores.items()}
    total = sum(exp.values())
    probabilities = {label: value / total for label, value in exp.items()}
    return max(probabilities, key=probabilities.get), probabilities


def save(model, path):
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(model, handle, indent=1, sort_keys=True)


def load(path):
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)
