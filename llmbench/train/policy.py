"""What the alignment loops do with a language model: batch byte sequences, score responses'
log-probabilities, sample, and put a scalar head on a copy of the network (reward, value)."""

from __future__ import annotations

import torch
from torch import nn

from llmbench.models.transformer import Transformer
from llmbench.train.losses import entropy_from_logits, sequence_logps, token_logps
from llmbench.train.prefs import EOS, PAD


def encode(prompts: list[bytes], responses: list[bytes],
           device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded token rows prompt + response, and the mask over *labels* (positions 1..T-1
    of the row, what logits[:, :-1] predict) that is 1 on response tokens only. With an empty
    prompt the response's first token, which nothing predicts (there is no BOS), is no label;
    its later tokens are."""
    rows = [p + r for p, r in zip(prompts, responses, strict=True)]
    width = max(len(r) for r in rows)
    tokens = torch.full((len(rows), width), PAD, dtype=torch.long)
    mask = torch.zeros((len(rows), width - 1), dtype=torch.float32)
    for i, (p, row) in enumerate(zip(prompts, rows, strict=True)):
        tokens[i, :len(row)] = torch.tensor(list(row), dtype=torch.long)
        mask[i, max(len(p) - 1, 0):len(row) - 1] = 1.0
    return tokens.to(device), mask.to(device)


def sequence_label_mask(mask: torch.Tensor) -> torch.Tensor:
    """From `encode`'s response mask, the mask over every label of prompt + response (1 up to
    and including the row's last response label, 0 on the padding after it): a right-padded
    row's labels are its prompt's (after the first token, which nothing predicts) and its
    response's."""
    return (mask.flip(-1).cumsum(-1) > 0).flip(-1).to(mask.dtype)


def response_logps(model: Transformer, tokens: torch.Tensor, mask: torch.Tensor, *,
                   average: bool = False) -> torch.Tensor:
    """Sum (or per-token mean) of log p(response token) per row."""
    return sequence_logps(model(tokens[:, :-1]), tokens[:, 1:], mask, average=average)


def label_logps(model: Transformer, tokens: torch.Tensor) -> torch.Tensor:
    """log p of every label (tokens[:, 1:]) given the tokens before it, (batch, T-1), in the
    logits' precision (fp16 / bf16 upcast to fp32)."""
    return token_logps(model(tokens[:, :-1]), tokens[:, 1:])


def token_logprobs(model: Transformer, tokens: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-label log-probabilities (batch, T-1) and the entropy of each prediction."""
    logits = model(tokens[:, :-1]).float()
    logp = torch.log_softmax(logits, dim=-1).gather(-1, tokens[:, 1:].unsqueeze(-1)).squeeze(-1)
    return logp, entropy_from_logits(logits)


def sample(probs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One token per row of `probs` (batch, vocab), on their device: argmax(p / q) with
    q ~ Exp(1), the computation torch.multinomial(probs, 1) makes (the same draws from the same
    generator on the CPU), without multinomial's checks of the distribution, which in some torch
    releases read a value back (.item()) on every call. Nothing is read to the host."""
    q = torch.empty_like(probs).exponential_(1, generator=generator)
    return probs.div(q).argmax(dim=-1, keepdim=True)


@torch.no_grad()
def generate(model: Transformer, prompts: torch.Tensor, *, max_new: int, temperature: float,
             generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample `max_new` tokens after equal-length prompts with the KV cache.

    Returns the rows (batch, prompt + max_new) and the label mask over the response (1 up to
    and including the first EOS). Sampling runs on the prompts' device with `generator`, which
    must be on that device (a CPU generator gives the draws torch.multinomial gave, so a seed
    reproduces a run); no token is read back to the host, so on a GPU generation queues
    without waiting. The one read a rollout needs is the caller's: the rows, to score them by
    the rule (`prompts_and_responses`)."""
    if generator is not None and generator.device.type != prompts.device.type:
        raise ValueError(f"the generator is on {generator.device}, the prompts on "
                         f"{prompts.device}: sample with a generator on the model's device")
    was_training = model.training
    model.eval()
    b, p = prompts.shape
    cache = model.new_cache(b, p + max_new)
    logits = model(prompts, cache=cache, start=0)[:, -1]
    out = [prompts]
    alive = torch.ones(b, dtype=torch.bool, device=prompts.device)
    mask = torch.zeros((b, p + max_new - 1), device=prompts.device)
    for t in range(max_new):
        probs = torch.softmax(logits.float() / max(temperature, 1e-6), dim=-1)
        nxt = sample(probs, generator)
        out.append(nxt)
        mask[:, p - 1 + t] = alive.float()
        alive = alive & (nxt.squeeze(1) != EOS[0])
        if t + 1 < max_new:
            logits = model(nxt, cache=cache, start=p + t)[:, -1]
    model.train(was_training)
    return torch.cat(out, dim=1), mask


def prompts_and_responses(rows: torch.Tensor, prompt_len: int) -> list[tuple[bytes, bytes]]:
    """Each row's prompt and its generated bytes after it, cut after the first EOS: one read
    of the rows to the host (a sync on a GPU, inherent: the rule is scored in Python)."""
    out = []
    for row in rows.tolist():
        data = bytes(row[prompt_len:])
        cut = data.find(EOS)
        out.append((bytes(row[:prompt_len]), data if cut < 0 else data[:cut + 1]))
    return out


def responses_of(rows: torch.Tensor, prompt_len: int) -> list[bytes]:
    """The generated bytes after the prompt, cut after the first EOS."""
    return [r for _, r in prompts_and_responses(rows, prompt_len)]


class ScalarHead(nn.Module):
    """A transformer (usually a copy of the policy) with a linear head giving one number per
    position: per-token values (PPO), or the value at the last response token (a reward)."""

    def __init__(self, backbone: Transformer) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(backbone.cfg.dim, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone.features(tokens)).squeeze(-1).float()

    def reward(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The value at each row's last response token (mask is over labels: label j is the
        token at row position j + 1)."""
        last = (mask * torch.arange(1, mask.shape[1] + 1, device=mask.device)).amax(-1).long()
        return self(tokens).gather(1, last.unsqueeze(1)).squeeze(1)


def module_bytes(module: nn.Module) -> int:
    """Bytes of a module's parameters and buffers (each storage once)."""
    seen: set[int] = set()
    total = 0
    for t in list(module.parameters()) + list(module.buffers()):
        storage = t.untyped_storage()
        if storage.data_ptr() in seen:
            continue
        seen.add(storage.data_ptr())
        total += storage.nbytes()
    return total
