"""Self-evaluation throughput: the embedded scoring path vs a naive loop, side by side.

Naive = what most scripts do: fixed batches of 16 in corpus order, padded to the longest, full logits
for every position. Ours = `TransformersBackend.score_yes_no`: length-sorted batches sized by a token
budget, logits of the last position only. Same model, same (instruction, code) pairs, same process;
prints both rates, the ratio and the largest score difference (they must agree).

    python benchmarks/score_throughput.py                      # tiny model, CPU, ~1 minute
    python benchmarks/score_throughput.py --model-shape small  # 32k vocabulary: where full logits hurt
    python benchmarks/score_throughput.py --model PATH --pairs 2000   # any local model, e.g. on a GPU
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from inversecoder.builders.extract import extract_code
from inversecoder.core import prompts
from inversecoder.core.backends.transformers_backend import TransformersBackend
from inversecoder.tiny_model import make_tiny_model

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "evol_instruct_sample.jsonl"
SHAPES = {"tiny": {"hidden_size": 128, "num_layers": 2}, "small": {"hidden_size": 512, "num_layers": 4}}


def sample_pairs() -> list[tuple[str, str]]:
    """The bundled sample's (instruction, code block) pairs: real instruction and code lengths."""
    pairs = []
    for line in SAMPLE.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if isinstance(record.get("response"), str) and isinstance(record.get("instruction"), str):
            found = extract_code(record["response"])
            if found.code_block and record["instruction"].strip():
                pairs.append((record["instruction"], found.code_block))
    return pairs


def score_pairs(n: int) -> list[str]:
    """Score prompts from the bundled sample, cycled up to n."""
    pairs = [prompts.score_prompt(instruction, code) for instruction, code in sample_pairs()]
    return [pairs[i % len(pairs)] for i in range(n)]


def naive_scores(backend: TransformersBackend, texts: list[str], batch_size: int = 16) -> list[float]:
    model = backend._load()
    answers = backend.answer_token_ids()
    tokenizer = backend.tokenizer
    scores = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            encoded = [tokenizer.encode(t) for t in texts[start : start + batch_size]]
            width = max(map(len, encoded))
            ids = torch.full((len(encoded), width), backend.pad_id)
            mask = torch.zeros_like(ids)
            for row, seq in enumerate(encoded):  # right padding, full logits, pick each row's last position
                ids[row, : len(seq)] = torch.tensor(seq)
                mask[row, : len(seq)] = 1
            logits = model(input_ids=ids.to(backend.device), attention_mask=mask.to(backend.device)).logits.float()
            last = logits[torch.arange(len(encoded)), torch.tensor([len(s) - 1 for s in encoded])]
            probs = last.softmax(-1)
            yes = probs[:, answers["yes"]].sum(-1)
            no = probs[:, answers["no"]].sum(-1)
            scores.extend((yes / (yes + no)).tolist())
    return scores


def timed(fn):
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    result = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="a local model folder (default: build a random-weight one)")
    parser.add_argument("--model-shape", choices=sorted(SHAPES), default="tiny")
    parser.add_argument("--pairs", type=int, default=400)
    parser.add_argument("--batch-tokens", type=int, default=32768)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        if args.model:
            path = args.model
        else:
            shape = SHAPES[args.model_shape]
            vocab = 2048 if args.model_shape == "tiny" else 32256
            path = make_tiny_model(
                Path(scratch) / "model", hidden_size=shape["hidden_size"], num_layers=shape["num_layers"]
            )
            if (
                vocab != 2048
            ):  # a real-size vocabulary (DeepSeek-Coder's): the extra rows are never produced by the tokenizer
                from transformers import AutoModelForCausalLM

                model = AutoModelForCausalLM.from_pretrained(path)
                model.resize_token_embeddings(vocab)
                model.save_pretrained(path)
        backend = TransformersBackend(str(path), batch_tokens=args.batch_tokens)
        texts = score_pairs(args.pairs)
        tokens = sum(len(backend.tokenizer.encode(t)) for t in texts)
        backend.score_yes_no(texts[:4])  # load and warm up both paths
        naive_scores(backend, texts[:4])
        naive, naive_time = timed(lambda: naive_scores(backend, texts))
        ours, our_time = timed(lambda: [s.score for s in backend.score_yes_no(texts)])

    difference = max(abs(a - b) for a, b in zip(naive, ours, strict=True))
    device = (
        "cuda: " + torch.cuda.get_device_name()
        if torch.cuda.is_available()
        else f"cpu ({torch.get_num_threads()} threads)"
    )
    print(
        f"\nYes/No scoring, {len(texts)} pairs, {tokens} prompt tokens, "
        f"model {args.model or args.model_shape}, {device}"
    )
    print(f"{'path':<44}{'pairs/s':>10}{'tokens/s':>12}")
    print(
        f"{'naive (batches of 16, padded, full logits)':<44}"
        f"{len(texts) / naive_time:>10.1f}{tokens / naive_time:>12.0f}"
    )
    print(f"{'ours (length-sorted budget, last logits)':<44}{len(texts) / our_time:>10.1f}{tokens / our_time:>12.0f}")
    print(f"speed-up: {naive_time / our_time:.2f}x   largest score difference: {difference:.2e}")


if __name__ == "__main__":
    main()
