"""Train models/tiny_encoder.py and write its vocabulary, weights and the shipped token data.

    python -m models.train_encoder

Corpus: the sentences of Python's reference documentation (`pydoc_data.topics`). Each sentence is
a positive example, the same words shuffled a negative one. The sentences are split three ways,
by a seeded shuffle: training, calibration (`calibration/text/calibration.txt`) and evaluation
(`calibration/text/evaluation.txt`), each a tokenized text file: one sample per line, its token
ids separated by spaces.
"""
from __future__ import annotations

import collections
import re
from pathlib import Path

import numpy as np
import torch

from models.tiny_encoder import CLS, MAX_LENGTH, PAD, UNKNOWN, VOCAB_FILE, TinyEncoder, encode, words

ROOT = Path(__file__).resolve().parent.parent
VOCAB_SIZE = 4000


def sentences() -> list[str]:
    import pydoc_data.topics

    text = " ".join(pydoc_data.topics.topics.values())
    found = [" ".join(s.split()) for s in re.split(r"(?<=[.!?])\s+", text)]
    return sorted({s for s in found if 6 <= len(s.split()) <= 40})


def shuffled(ids: list[int], rng: np.random.Generator) -> list[int]:
    body = ids[1:]
    while len(body) > 1:
        order = rng.permutation(len(body))
        if (order != np.arange(len(body))).any():
            return [ids[0]] + [body[i] for i in order]
    return ids


def padded(rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    length = max(len(r) for r in rows)
    ids = torch.tensor([r + [PAD] * (length - len(r)) for r in rows])
    return ids, (ids != PAD).long()


def main() -> None:
    rng = np.random.default_rng(0)
    corpus = sentences()
    order = rng.permutation(len(corpus))
    evaluation, calibration, training = order[:300], order[300:600], order[600:]
    counts = collections.Counter(w for i in training for w in words(corpus[i]))
    vocab_words = ["[PAD]", "[UNK]", "[CLS]"] + [w for w, _ in counts.most_common(VOCAB_SIZE - 3)]
    VOCAB_FILE.write_text("\n".join(vocab_words) + "\n")
    vocab = {w: i for i, w in enumerate(vocab_words)}
    assert (vocab["[PAD]"], vocab["[UNK]"], vocab["[CLS]"]) == (PAD, UNKNOWN, CLS)
    encoded = [encode(s, vocab) for s in corpus]
    folder = ROOT / "calibration/text"
    folder.mkdir(parents=True, exist_ok=True)
    for name, split in (("calibration", calibration), ("evaluation", evaluation)):
        rows = [encoded[i] if n % 2 == 0 else shuffled(encoded[i], rng) for n, i in enumerate(split)]
        (folder / f"{name}.txt").write_text("".join(" ".join(map(str, r)) + "\n" for r in rows))

    torch.manual_seed(0)
    model = TinyEncoder(len(vocab_words))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    for epoch in range(12):
        model.train()
        for start in range(0, len(training), 32):
            batch = [encoded[i] for i in training[start:start + 32]]
            rows = batch + [shuffled(r, rng) for r in batch]
            ids, mask = padded(rows)
            target = torch.tensor([1] * len(batch) + [0] * len(batch))
            loss = torch.nn.functional.cross_entropy(model(ids, mask)[1], target)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            rows = [encoded[i] for i in evaluation] + [shuffled(encoded[i], rng) for i in evaluation]
            ids, mask = padded(rows)
            correct = (model(ids, mask)[1].argmax(1) == torch.tensor([1] * 300 + [0] * 300)).float().mean()
        print(f"epoch {epoch}: loss {loss.item():.3f}, held-out accuracy {100 * correct:.1f} %")
    torch.save(model.state_dict(), ROOT / "models/tiny_encoder.pt")
    print(f"max length {MAX_LENGTH}, vocabulary {len(vocab_words)}")


if __name__ == "__main__":
    main()
