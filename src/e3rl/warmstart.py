"""Base policy for tiny models: a locally trained tokenizer and a short supervised warm start.

RL needs a base policy that already solves some prompts: a group whose rollouts all fail has no
signal. The warm start trains on the task's worked answers just long enough that easy levels are
mostly solved and hard ones rarely. The result is cached on disk, keyed by everything that shapes
it, so the demo and the tests pay for it once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from e3rl.config import ModelConfig, TaskConfig
from e3rl.tasks import TASKS
from e3rl.tiny import build_tiny_model, save_tokenizer, train_tokenizer

FORMAT_VERSION = 3  # bump when the task format or the warm start changes meaning


def cache_dir() -> Path:
    return Path(os.environ.get("E3RL_CACHE", Path.home() / ".cache" / "e3rl"))


def _key(cfg: ModelConfig, task: TaskConfig, seed: int) -> str:
    blob = json.dumps(
        [
            FORMAT_VERSION,
            dataclasses.asdict(cfg.tiny),
            # the seed is keyed below, as the one actually used
            {k: v for k, v in dataclasses.asdict(cfg.warm_start).items() if k != "seed"},
            # a field added later counts only when set: earlier cache entries keep their key
            {
                k: v
                for k, v in dataclasses.asdict(task).items()
                if k != "worked_prior" or v is not None
            },
            seed,
        ],
        sort_keys=True,
    )
    return hashlib.blake2b(blob.encode(), digest_size=8).hexdigest()


def _batch(tokenizer, pairs: list[tuple]):
    """Right-padded (input_ids, attention_mask, labels) from (prompt, response[, train_first])
    examples; the loss covers the response only, and not its first token when train_first is
    False."""
    eos = tokenizer.eos_token_id
    enc = [
        (
            tokenizer(p[0], add_special_tokens=False)["input_ids"],
            tokenizer(p[1], add_special_tokens=False)["input_ids"] + [eos],
        )
        for p in pairs
    ]
    width = max(len(p) + len(r) for p, r in enc)
    ids = torch.full((len(enc), width), tokenizer.pad_token_id)
    labels = torch.full((len(enc), width), -100)
    attn = torch.zeros((len(enc), width), dtype=torch.long)
    for i, (p, r) in enumerate(enc):
        ids[i, : len(p) + len(r)] = torch.tensor(p + r)
        labels[i, len(p) : len(p) + len(r)] = torch.tensor(r)
        if len(pairs[i]) > 2 and not pairs[i][2]:
            labels[i, len(p)] = -100
        attn[i, : len(p) + len(r)] = 1
    return ids, attn, labels


class _WarmStartProgress:
    """A bar on a terminal; elsewhere (a log file, CI, a pipe) a line every tenth of the way, so a
    first run that spends minutes here is never silent."""

    def __init__(self, steps: int) -> None:
        self.steps, self.t0 = steps, time.perf_counter()
        self.console = Console(stderr=True)
        self.bar: Progress | None = None
        self.next_line = max(steps // 10, 1)
        if self.console.is_terminal:
            self.bar = Progress(
                TextColumn("warm start"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]:.3f}"),
                TimeRemainingColumn(),
                console=self.console,
            )
            self.task = self.bar.add_task("", total=steps, loss=float("nan"))
            self.bar.start()

    def update(self, step: int, loss: float) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=step, loss=loss)
        elif step >= self.next_line or step == self.steps:
            self.next_line += max(self.steps // 10, 1)
            elapsed = time.perf_counter() - self.t0
            left = elapsed / step * (self.steps - step)
            print(
                f"warm start: step {step}/{self.steps}, loss {loss:.3f}, "
                f"{elapsed:.0f} s elapsed, about {left:.0f} s left",
                file=sys.stderr,
                flush=True,
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def supervised_warm_start(
    model, tokenizer, examples: Iterator[tuple[str, str]], steps: int, lr: float, batch_size: int
) -> list[float]:
    """Next-token loss on (prompt, response) pairs drawn fresh each step; returns the losses.

    Fresh problems every step (never the same one twice, on purpose): a tiny model fed a fixed
    set memorises it and learns nothing that carries over to held-out prompts.
    """
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    warm = max(steps // 20, 1)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * max(0.05, 1 - s / max(steps, 1))
    )
    model.train()
    losses = []
    progress = _WarmStartProgress(steps)
    for step in range(steps):
        ids, attn, labels = _batch(tokenizer, list(itertools.islice(examples, batch_size)))
        loss = model(input_ids=ids, attention_mask=attn, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        progress.update(step + 1, losses[-1])
    progress.close()
    model.eval()
    return losses


def _discard_corrupt(target: Path, error: Exception) -> None:
    """Moves a cache entry that cannot be loaded out of the way (renamed first: another process
    may be reading the same cache), and says so."""
    why = str(error).strip().splitlines()[0][:160] if str(error).strip() else ""
    Console(stderr=True).print(
        f"[dim]e3rl[/dim] the cached base model {target} is unreadable "
        f"({type(error).__name__}: {why}); rebuilding it"
    )
    doomed = target.with_name(f".tmp-corrupt-{target.name}-{os.getpid()}")
    try:
        os.replace(target, doomed)
    except OSError:
        return  # another process moved it first
    shutil.rmtree(doomed, ignore_errors=True)


class CacheError(OSError):
    """The model cache cannot take a new base (an OSError: the environment, not the input)."""


def _check_writable(path: Path) -> None:
    """Fails before the warm start, not after it, when the cache cannot take the result."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=path).close()
    except OSError as e:
        raise CacheError(
            f"the model cache {path} is not writable ({e.strerror or e}); it is "
            f"E3RL_CACHE={cache_dir()} (default ~/.cache/e3rl): set E3RL_CACHE to a writable "
            "directory"
        ) from None


SHIPPED_BASES = Path(__file__).parent / "bases"
"""Bases shipped with e3rl (package data), built and checked by scripts/build_demo_base.py."""


def base_name(cfg: ModelConfig, task: TaskConfig, seed: int) -> str:
    return f"{task.name}-{_key(cfg, task, seed)}"


def find_base(cfg: ModelConfig, task: TaskConfig, seed: int) -> tuple[Path, str] | None:
    """(directory, 'shipped' | 'cache') of an existing base for exactly this config, or None.

    A shipped base wins over the cache: it is the one that passed the check, the same on every
    machine, while a cached one is whatever this machine's floating-point path produced.
    """
    name = base_name(cfg, task, seed)
    for root, where in ((SHIPPED_BASES, "shipped"), (cache_dir() / "base", "cache")):
        if (root / name / "config.json").is_file():
            return root / name, where
    return None


def build_base(cfg: ModelConfig, task: TaskConfig, seed: int):
    """(model, tokenizer): a fresh tokenizer and warm start, never from the cache."""
    module = TASKS[task.name]
    parts = module.splits(task.levels, task.train_size, task.val_size, task.seed)
    # The tokenizer sees every level's text (and the digits) so no task string falls apart.
    tokenizer = train_tokenizer([p.question + p.solution for p in parts["train"]] + ["0123456789"])
    model = build_tiny_model(cfg.tiny, tokenizer, seed)
    if cfg.warm_start.steps > 0:
        held_out = {p.question for p in parts["val"]}
        problems = module.stream(task.levels, seed + 10_000, exclude=held_out)
        examples = warm_start_examples(problems, task, random.Random(seed))
        ws = cfg.warm_start
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            supervised_warm_start(model, tokenizer, examples, ws.steps, ws.lr, ws.batch_size)
    return model, tokenizer


def warm_start_examples(problems, task: TaskConfig, pick: random.Random) -> Iterator[tuple]:
    """(prompt, response, train_first) per problem: worked with probability worked_fraction
    (multi-step problems only: a single operation's worked answer is the direct one), and the
    first token of a worked answer trained with the probability that makes worked answers
    `worked_prior` of the first tokens trained on."""
    wf = task.worked_fraction
    prior = wf if task.worked_prior is None else task.worked_prior
    # wf * q / (wf * q + 1 - wf) = prior
    keep_first = 1.0 if prior >= wf else prior * (1 - wf) / (wf * (1 - prior))
    for p in problems:
        # one draw per problem whatever its kind, and a second only when the prior is set:
        # without it the stream is the one earlier versions trained on
        if pick.random() < wf and p.solution != p.direct:
            yield p.question, p.solution, keep_first >= 1.0 or pick.random() < keep_first
        else:
            yield p.question, p.direct, True


def save_base(model, tokenizer, target: Path) -> None:
    """Written beside the target and renamed: a base directory is complete or absent."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".tmp-"))
    try:
        model.save_pretrained(tmp)
        save_tokenizer(tokenizer, tmp)
        os.replace(tmp, target)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not (target / "config.json").is_file():
            raise


def warm_start_minutes(cfg: ModelConfig) -> float:
    """A forecast of the warm start's minutes on 2 CPU cores, for the message that announces it.

    Two sizes on a 2-core AMD EPYC at 2 threads, 3000 steps of 48 sequences: about 7 min for
    the default 1M model, 26 min measured for hidden 256 / MLP 1024 (4x the block weights). A
    fixed part (tokenizer, checks, small kernels) plus a part that grows with the weights.
    """
    t = cfg.tiny
    weights = t.num_layers * (4 * t.hidden_size**2 + 3 * t.hidden_size * t.intermediate_size)
    default = 4 * (4 * 128**2 + 3 * 128 * 512)
    sequences = cfg.warm_start.steps * cfg.warm_start.batch_size
    return sequences / 20_000 * (0.13 + 0.87 * weights / default)


def tiny_base_model(cfg: ModelConfig, task: TaskConfig, seed: int):
    """(model, tokenizer): shipped with e3rl or cached if this exact base exists, else built now."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    found = find_base(cfg, task, seed)
    if found is not None:
        path, where = found
        try:
            return AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)
        except Exception as e:  # truncated or garbled (a full disk, a hand edit): rebuild it
            if where == "shipped":  # part of the installed package: nothing to rebuild from
                raise
            _discard_corrupt(path, e)
    target = cache_dir() / "base" / base_name(cfg, task, seed)
    _check_writable(target.parent)
    if cfg.warm_start.steps > 0:
        print(
            f"building the base model: a tokenizer and {cfg.warm_start.steps} supervised "
            f"warm-start steps (about {warm_start_minutes(cfg):.0f} min on 2 CPU cores, once: "
            f"cached in {target.parent})",
            file=sys.stderr,
            flush=True,
        )
    model, tokenizer = build_base(cfg, task, seed)
    save_base(model, tokenizer, target)
    return model, tokenizer


def _first_token_classes(tokenizer) -> tuple[torch.Tensor, torch.Tensor]:
    """Masks over the vocabulary: tokens that open a direct answer ('#...') and those that open
    a worked one (a digit: the first operand). BPE may merge '#' with digits, hence by prefix."""
    vocab = len(tokenizer)
    direct = torch.zeros(vocab, dtype=torch.bool)
    worked = torch.zeros(vocab, dtype=torch.bool)
    for i in range(vocab):
        text = tokenizer.decode([i])
        direct[i] = text.startswith("#")
        worked[i] = text[:1].isdigit()
    return direct, worked


@torch.no_grad()
def _greedy(model, tokenizer, questions: list[str], max_new: int, first_mask=None) -> list[str]:
    """Greedy responses; `first_mask` (bool over the vocabulary) restricts the first token."""
    from transformers import LogitsProcessor, LogitsProcessorList

    class _First(LogitsProcessor):
        def __init__(self, width: int):
            self.width = width

        def __call__(self, input_ids, scores):
            if input_ids.shape[1] == self.width:
                scores = scores.masked_fill(~first_mask[: scores.shape[1]].to(scores.device), -1e9)
            return scores

    tokenizer.padding_side = "left"
    out: list[str] = []
    for s in range(0, len(questions), 100):
        enc = tokenizer(
            questions[s : s + 100], return_tensors="pt", padding=True, add_special_tokens=False
        )
        procs = LogitsProcessorList(
            [_First(enc.input_ids.shape[1])] if first_mask is not None else []
        )
        gen = model.generate(  # not **enc: it holds token_type_ids under transformers 4.56
            input_ids=enc.input_ids,
            attention_mask=enc.attention_mask,
            max_new_tokens=max_new,
            do_sample=False,
            logits_processor=procs,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        out += tokenizer.batch_decode(gen[:, enc.input_ids.shape[1] :], skip_special_tokens=True)
    return out


@torch.no_grad()
def probe_base(model, tokenizer, task: TaskConfig, max_new_tokens: int = 36) -> dict:
    """How the base answers the validation prompts, per level: greedy accuracy, share of greedy
    answers worked out, mean P(worked first token), accuracy of forced-worked / forced-direct."""
    module = TASKS[task.name]
    val = module.splits(task.levels, task.train_size, task.val_size, task.seed)["val"]
    model.eval()
    direct_mask, worked_mask = _first_token_classes(tokenizer)
    qs = [p.question for p in val]
    greedy = _greedy(model, tokenizer, qs, max_new_tokens)
    forced_w = _greedy(model, tokenizer, qs, max_new_tokens, worked_mask)
    forced_d = _greedy(model, tokenizer, qs, max_new_tokens, direct_mask)
    p_worked = []
    for s in range(0, len(qs), 100):
        enc = tokenizer(
            qs[s : s + 100], return_tensors="pt", padding=True, add_special_tokens=False
        )
        logits = model(input_ids=enc.input_ids, attention_mask=enc.attention_mask).logits
        logits = logits[:, -1, :].float()
        probs = torch.softmax(logits, -1)[:, : len(tokenizer)]
        p_worked += (probs * worked_mask[: probs.shape[1]]).sum(-1).tolist()
    rows: dict[int, dict] = {}
    for i, p in enumerate(val):
        r = rows.setdefault(
            p.level,
            {
                "n": 0,
                "greedy": 0,
                "worked": 0,
                "p_worked": 0.0,
                "forced_worked": 0,
                "forced_direct": 0,
            },
        )
        r["n"] += 1
        r["greedy"] += module.score(greedy[i], str(p.answer))
        r["worked"] += not greedy[i].lstrip().startswith("#")
        r["p_worked"] += p_worked[i]
        r["forced_worked"] += module.score(forced_w[i], str(p.answer))
        r["forced_direct"] += module.score(forced_d[i], str(p.answer))
    levels = {
        lv: {"n": r["n"], **{k: r[k] / r["n"] for k in r if k != "n"}}
        for lv, r in sorted(rows.items())
    }
    multi = [i for i, p in enumerate(val) if module.LEVELS[p.level][2] > 1]
    return {
        "greedy_accuracy": sum(module.score(greedy[i], str(p.answer)) for i, p in enumerate(val))
        / len(val),
        "worked_share_multistep": sum(not greedy[i].lstrip().startswith("#") for i in multi)
        / max(len(multi), 1),
        "p_worked_multistep": sum(p_worked[i] for i in multi) / max(len(multi), 1),
        "p_worked_near_half": sum(0.35 < p_worked[i] < 0.65 for i in multi) / max(len(multi), 1),
        "levels": levels,
        "samples": [[qs[i], greedy[i]] for i in range(0, len(qs), 37)],
    }


@dataclasses.dataclass(frozen=True)
class BaseBand:
    """What a base must look like for RL to have one robust thing to learn (docs/demo.md): on
    the multi-step levels where working out pays, greedy mostly answers directly (so the base's
    accuracy is the direct one) while its worked answers are far more often right."""

    levels: tuple[int, ...]
    """The multi-step levels the band is about."""
    worked_share: tuple[float, float]
    """Allowed range of the share of greedy answers on `levels` that are worked out."""
    p_worked: tuple[float, float]
    """Allowed range of the mean probability of a worked first token on `levels`."""
    min_worked_advantage: float
    """Forced-worked minus forced-direct accuracy on `levels`, at least this."""
    greedy_accuracy: tuple[float, float]
    """Allowed range of the base's greedy accuracy on every validation prompt."""


def band_measures(report: dict, band: BaseBand) -> dict[str, float]:
    """The figures of a `probe_base` report that `band` bounds, pooled over the band's levels."""
    rows = [report["levels"][lv] for lv in band.levels if lv in report["levels"]]
    if not rows:
        raise ValueError(
            f"the probe covers levels {sorted(report['levels'])}, none of {band.levels}"
        )
    n = sum(r["n"] for r in rows)

    def pooled(key: str) -> float:
        return sum(r[key] * r["n"] for r in rows) / n

    return {
        "worked_share": pooled("worked"),
        "p_worked": pooled("p_worked"),
        "worked_advantage": pooled("forced_worked") - pooled("forced_direct"),
        "forced_worked_accuracy": pooled("forced_worked"),
        "forced_direct_accuracy": pooled("forced_direct"),
        "greedy_accuracy": report["greedy_accuracy"],
    }


def check_base(report: dict, band: BaseBand) -> list[str]:
    """What is outside the band, one sentence each; empty when the base passes."""
    m = band_measures(report, band)
    problems = []
    for key in ("worked_share", "p_worked", "greedy_accuracy"):
        lo, hi = getattr(band, key)
        if not lo <= m[key] <= hi:
            problems.append(f"{key} {m[key]:.3f} is outside [{lo}, {hi}]")
    if m["worked_advantage"] < band.min_worked_advantage:
        problems.append(
            f"worked answers beat direct ones by {m['worked_advantage']:.3f} on levels "
            f"{list(band.levels)}, less than {band.min_worked_advantage}"
        )
    return problems
