"""A small transformer encoder over token ids, shaped like the sentence encoders people deploy:
inputs `input_ids` and `attention_mask` (int64, [batch, seq], both axes dynamic), outputs a mean-
pooled sentence `embedding` [batch, 128] and `logits` [batch, 2].

Trained by models/train_encoder.py on sentences of Python's own reference documentation
(`pydoc_data.topics`, part of every CPython install) to tell a sentence from the same sentence with
its words shuffled, a task that needs word order and so the attention layers. Attention is written
out with MatMul and Softmax (no fused kernel), as exporters produce it for BERT-style models.
"""
from __future__ import annotations

import math
import re
from pathlib import Path

import torch
from torch import nn

WIDTH = 128
HEADS = 4
LAYERS = 2
MAX_LENGTH = 64
PAD, UNKNOWN, CLS = 0, 1, 2
VOCAB_FILE = Path(__file__).with_name("tiny_encoder_vocab.txt")


class SelfAttention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.qkv = nn.Linear(WIDTH, 3 * WIDTH)
        self.out = nn.Linear(WIDTH, WIDTH)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        q, k, v = self.qkv(x).reshape(batch, length, 3, HEADS, WIDTH // HEADS).permute(2, 0, 3, 1, 4)
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(WIDTH // HEADS) + bias
        mixed = torch.matmul(torch.softmax(scores, dim=-1), v)
        return self.out(mixed.transpose(1, 2).reshape(batch, length, WIDTH))


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attention = SelfAttention()
        self.norm1 = nn.LayerNorm(WIDTH)
        self.feed_forward = nn.Sequential(nn.Linear(WIDTH, 4 * WIDTH), nn.GELU(), nn.Linear(4 * WIDTH, WIDTH))
        self.norm2 = nn.LayerNorm(WIDTH)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x + self.attention(x, bias))
        return self.norm2(x + self.feed_forward(x))


class TinyEncoder(nn.Module):
    def __init__(self, vocab_size: int = 4000) -> None:
        super().__init__()
        self.tokens = nn.Embedding(vocab_size, WIDTH)
        self.positions = nn.Embedding(MAX_LENGTH, WIDTH)
        self.blocks = nn.ModuleList([Block() for _ in range(LAYERS)])
        self.classifier = nn.Linear(WIDTH, 2)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = self.tokens(input_ids) + self.positions(positions)[None]
        mask = attention_mask.to(x.dtype)
        bias = ((1.0 - mask) * -1e4)[:, None, None, :]
        for block in self.blocks:
            x = block(x, bias)
        embedding = (x * mask[..., None]).sum(dim=1) / mask.sum(dim=1, keepdim=True).clamp(min=1.0)
        return embedding, self.classifier(embedding)


def build_model(vocab_size: int = 4000) -> TinyEncoder:
    return TinyEncoder(vocab_size)


def words(sentence: str) -> list[str]:
    return re.findall(r"[a-z_]+|[0-9]+|[^\sa-z_0-9]", sentence.lower())


def encode(sentence: str, vocab: dict[str, int]) -> list[int]:
    """[CLS] then one id per word (unknown words share one id), cut to MAX_LENGTH."""
    return ([CLS] + [vocab.get(word, UNKNOWN) for word in words(sentence)])[:MAX_LENGTH]


def load_vocab() -> dict[str, int]:
    return {word: index for index, word in enumerate(VOCAB_FILE.read_text().splitlines())}
