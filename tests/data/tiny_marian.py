"""A tiny, randomly initialised Chinese->English MarianMT model that loads like Helsinki-NLP/opus-mt-zh-en.

Its sentencepiece models are trained here, offline, on a few sentences; its translations are
random English tokens, which is all the tests need: they check the loading path, caching and how
translations flow into prompts.
"""

from __future__ import annotations

import json
from pathlib import Path

import sentencepiece
import torch
from transformers import MarianConfig, MarianMTModel, MarianTokenizer

CHINESE = ["狗叫声", "猫叫声", "鸟叫声", "门铃声", "玻璃破碎声", "汽车鸣笛", "下雨", "打雷", "有人说话", "婴儿哭"]
ENGLISH = [
    "dog barking",
    "cat meowing",
    "birds chirping",
    "doorbell",
    "glass breaking",
    "car horn",
    "rain",
    "thunder",
    "people talking",
    "baby crying",
]


def build_tiny_marian(folder: Path, seed: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, lines in (("source", CHINESE * 20), ("target", ENGLISH * 20)):
        corpus = folder / f"{name}.txt"
        corpus.write_text("\n".join(lines), encoding="utf-8")
        sentencepiece.SentencePieceTrainer.train(
            input=str(corpus),
            model_prefix=str(folder / name),
            vocab_size=60,
            character_coverage=1.0,
            model_type="unigram",
            hard_vocab_limit=False,
            bos_id=-1,
            eos_id=1,
            unk_id=2,
            pad_id=0,
        )
        corpus.unlink()
        (folder / f"{name}.model").rename(folder / f"{name}.spm")
        (folder / f"{name}.vocab").unlink()
    pieces = ["<pad>", "</s>", "<unk>"]
    for name in ("source", "target"):
        processor = sentencepiece.SentencePieceProcessor(model_file=str(folder / f"{name}.spm"))
        pieces += [processor.id_to_piece(i) for i in range(processor.get_piece_size())]
    vocab = {piece: index for index, piece in enumerate(dict.fromkeys(pieces))}
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    tokenizer = MarianTokenizer(str(folder / "source.spm"), str(folder / "target.spm"), str(folder / "vocab.json"))
    config = MarianConfig(
        vocab_size=len(vocab),
        d_model=16,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        max_position_embeddings=64,
        pad_token_id=vocab["<pad>"],
        eos_token_id=vocab["</s>"],
        decoder_start_token_id=vocab["<pad>"],
    )
    torch.manual_seed(seed)
    model = MarianMTModel(config)
    # Random weights would emit Chinese pieces too; keep the decoder on English pieces so the
    # output reads as a (meaningless) English translation.
    with torch.no_grad():
        for piece, index in vocab.items():
            if any("\u4e00" <= character <= "\u9fff" for character in piece):
                model.final_logits_bias[0, index] = -1e4
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
