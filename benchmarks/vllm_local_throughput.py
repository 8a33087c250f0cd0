"""The in-process vLLM backend (`vllm-local`) vs the `transformers` backend: tokens/s for generation and for
Yes/No scoring, side by side in one run, on one random-weight model built from a config. Run it in the vLLM venv
(`make vllm`), where both backends import:

    .venv-vllm/bin/python benchmarks/vllm_local_throughput.py                        # tiny model, CPU, ~1 min
    .venv-vllm/bin/python benchmarks/vllm_local_throughput.py --shape 100m --requests 32 --new-tokens 32
    python benchmarks/vllm_local_throughput.py --model PATH --requests 512 --new-tokens 256   # a GPU node

Generation: `--requests` samples (`--samples` per prompt, temperature 0.8, each with its own seed) of
`--new-tokens` tokens; tokens/s counts generated tokens. Scoring: `--pairs` score prompts; tokens/s counts prompt
tokens. vLLM's engine start is timed apart; each path is warmed up first. The table is printed last.
`--top20` scores as a vLLM without `logprob_token_ids` does: the top 20, then one `prompt_logprobs` request per
Yes/No variant outside them; with random weights that is every variant (the worst case; a trained judge usually
has them in its top 20): the `logprob requests` line says how many.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from score_throughput import sample_pairs

from inversecoder.core import prompts
from inversecoder.core.backends.base import GenerationRequest, SamplingParams
from inversecoder.tiny_model import make_tiny_model

#: hidden size, layers, vocabulary (the tokenizer's 2048, or DeepSeek-Coder's 32256 rows: never produced by it)
SHAPES = {"tiny": (128, 2, 2048), "small": (512, 4, 32256), "100m": (768, 12, 32256)}


def build_model(folder: Path, shape: str) -> Path:
    hidden, layers, vocab = SHAPES[shape]
    path = make_tiny_model(folder, hidden_size=hidden, num_layers=layers)
    if vocab != 2048:
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(path)
        model.resize_token_embeddings(vocab)
        model.save_pretrained(path)
    return path


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="a local model folder (default: a random-weight one of --shape)")
    parser.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    parser.add_argument("--requests", type=int, default=64, help="generation requests")
    parser.add_argument("--samples", type=int, default=4, help="samples per prompt (K)")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--pairs", type=int, default=64, help="score prompts")
    parser.add_argument("--max-context", type=int, default=2048)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--batch-tokens", type=int, default=1 << 20, help="one batch: vLLM schedules it itself")
    parser.add_argument("--kv-cache-mb", type=int, default=512, help="CPU only: vLLM's KV cache (0: vLLM's default)")
    parser.add_argument("--top20", action="store_true", help="score without logprob_token_ids (older vLLM)")
    args = parser.parse_args()

    import torch

    from inversecoder.core.backends.transformers_backend import TransformersBackend
    from inversecoder.core.backends.vllm_local import VLLMLocalBackend, vllm_version

    on_gpu = torch.cuda.is_available()
    vllm_args: dict = {} if on_gpu else {"enforce_eager": True}
    if not on_gpu and args.kv_cache_mb:
        vllm_args["kv_cache_memory_bytes"] = args.kv_cache_mb * 2**20
    texts = sample_pairs()
    prompt_texts = [prompts.summarize_prompt(code, "") for _, code in texts]
    requests = [
        GenerationRequest(prompt_texts[(i // args.samples) % len(prompt_texts)], seed=i) for i in range(args.requests)
    ]
    score_texts = [prompts.score_prompt(instruction, code) for instruction, code in texts]
    score_texts = [score_texts[i % len(score_texts)] for i in range(args.pairs)]
    params = SamplingParams(temperature=0.8, top_p=0.95, max_new_tokens=args.new_tokens)

    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(args.model) if args.model else build_model(Path(scratch) / "model", args.shape)
        common = {"dtype": args.dtype, "batch_tokens": args.batch_tokens, "max_context": args.max_context}
        local = VLLMLocalBackend(str(path), vllm_args=vllm_args, **common)
        if args.top20:
            local.token_ids_logprobs = False
        embedded = TransformersBackend(str(path), device="cuda" if on_gpu else "cpu", **common)
        prompt_tokens = sum(len(local._encode(r.prompt)) for r in requests)
        score_tokens = sum(len(local._encode(t)) for t in score_texts)
        _, startup = timed(lambda: local.generate(requests[:1], SamplingParams(max_new_tokens=1)))
        for name, backend in (("vllm-local", local), ("transformers", embedded)):
            backend.generate(requests[:2], SamplingParams(max_new_tokens=2))  # warm-up
            backend.score_yes_no(score_texts[:2])
            before = dict(local.totals)
            done, generate_time = timed(lambda b=backend: b.generate(requests, params))
            scores, score_time = timed(lambda b=backend: b.score_yes_no(score_texts))
            generated = sum(c.generated_tokens for c in done)
            extra = local.totals["logprob_requests"] - before["logprob_requests"] if backend is local else 0
            rows.append((name, generated, generate_time, score_time, scores, extra))
        local.close()

    difference = max(abs((a.score or 0) - (b.score or 0)) for a, b in zip(rows[0][4], rows[1][4], strict=True))
    device = f"cuda: {torch.cuda.get_device_name()}" if on_gpu else f"cpu ({torch.get_num_threads()} threads)"
    params_count = sum(p.numel() for p in embedded._load().parameters())
    print(f"\nvLLM {vllm_version()} (in process) vs transformers, {device}, dtype {args.dtype}")
    print(
        f"model: {args.model or args.shape} ({params_count / 1e6:.1f}M parameters); vLLM engine start {startup:.1f} s"
    )
    print(
        f"generation: {args.requests} requests ({args.samples} per prompt, {prompt_tokens} prompt tokens), "
        f"up to {args.new_tokens} new tokens, temperature 0.8; scoring: {args.pairs} prompts, {score_tokens} tokens"
    )
    print(f"vllm-local logprob requests (answer variants outside the top 20): {rows[0][5]}")
    print(f"largest score difference: {difference:.2e}\n")
    print(f"{'backend':<14}{'generated':>10}{'gen s':>8}{'gen tok/s':>11}{'score s':>9}{'score tok/s':>13}")
    for name, generated, generate_time, score_time, _, _ in rows:
        print(
            f"{name:<14}{generated:>10}{generate_time:>8.2f}{generated / generate_time:>11.0f}"
            f"{score_time:>9.2f}{score_tokens / score_time:>13.0f}"
        )
    ratio_gen = (rows[0][1] / rows[0][2]) / (rows[1][1] / rows[1][2])
    print(f"{'vllm/transf.':<14}{'':>10}{'':>8}{ratio_gen:>10.2f}x{'':>9}{rows[1][3] / rows[0][3]:>12.2f}x")


if __name__ == "__main__":
    main()
