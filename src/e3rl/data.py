"""Prompt sources: JSONL / JSON / Parquet files (verl's format included) and built-in task splits.

Everything becomes a `Prompt` with a stable id (a hash of its content, so ids survive
reordering and re-export of the file), chat messages, a reference answer and metadata such as
the difficulty level or data source used to break results down.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from e3rl.config import TaskConfig
from e3rl.tasks import TASKS


class DataError(ValueError):
    """A data file or row is unusable; the message names the file, the line/row and the field."""


class EmptyAnswer(DataError):
    """A record whose reference answer is empty: it cannot be scored, so it is skipped."""


class PromptSet(list):
    """The prompts of a source, plus the records skipped on the way (with the reasons)."""

    skipped: list[str]

    def __init__(self, prompts=(), skipped=None) -> None:
        super().__init__(prompts)
        self.skipped = list(skipped or [])

    def __getitem__(self, index):
        # A slice (data.train_limit / val_limit) keeps the skipped records, so they are reported.
        if isinstance(index, slice):
            return PromptSet(super().__getitem__(index), self.skipped)
        return super().__getitem__(index)


@dataclass
class Prompt:
    id: str
    messages: list[dict[str, str]]
    answer: str
    text: str | None = None
    """Plain rendering for models without a chat template (built-in tasks set it)."""
    meta: dict[str, Any] = field(default_factory=dict)
    where: str | None = None
    """Where the record came from ('file:line', 'file row N'), for error messages."""


def prompt_id(messages: list[dict[str, str]], answer: str) -> str:
    blob = json.dumps([messages, answer], sort_keys=True, ensure_ascii=False)
    return hashlib.blake2b(blob.encode("utf-8"), digest_size=8).hexdigest()


# --------------------------------------------------------------------------- field resolution

_PROMPT_FIELDS = ("prompt", "messages", "question", "problem", "input")
_ANSWER_FIELDS = ("answer", "ground_truth", "solution_answer", "target", "final_answer")
_META_FIELDS = ("level", "data_source", "source", "difficulty", "subject")


def _messages(value: Any, where: str) -> list[dict[str, str]]:
    if isinstance(value, str):
        if not value.strip():
            raise DataError(f"{where}: the prompt is empty")
        return [{"role": "user", "content": value}]
    if hasattr(value, "tolist"):  # numpy arrays from parquet
        value = value.tolist()
    if isinstance(value, list) and value:
        out = []
        for i, m in enumerate(value):
            if not isinstance(m, dict) or not isinstance(m.get("content"), str):
                raise DataError(
                    f"{where}: prompt message {i} must be an object with a string 'content' "
                    f"(and a 'role'), got {str(m)[:80]!r}"
                )
            out.append({"role": str(m.get("role") or "user"), "content": m["content"]})
        if not any(m["content"].strip() for m in out):
            raise DataError(f"{where}: every prompt message is empty")
        return out
    raise DataError(
        f"{where}: the prompt must be a non-empty string or a list of chat messages, "
        f"got {type(value).__name__} {str(value)[:80]!r}"
    )


def row_to_prompt(row: dict, where: str) -> Prompt:
    """One record -> Prompt. Understands verl rows (reward_model.ground_truth) and plain ones."""
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected a JSON object per record, got {type(row).__name__}")
    key = next((k for k in _PROMPT_FIELDS if row.get(k) is not None), None)
    if key is None:
        nulls = [k for k in _PROMPT_FIELDS if k in row]
        if nulls:  # the field is there, empty: "no prompt field" would contradict "found"
            raise DataError(
                f"{where}: the prompt field '{nulls[0]}' is null; expected a non-empty string "
                "or a list of chat messages"
            )
        raise DataError(
            f"{where}: no prompt field; expected one of {', '.join(_PROMPT_FIELDS)} "
            f"(found: {', '.join(map(str, row)) or 'nothing'})"
        )
    messages = _messages(row[key], where)
    answer = None
    rm = row.get("reward_model")
    if isinstance(rm, dict) and rm.get("ground_truth") is not None:
        answer = rm["ground_truth"]
    else:
        answer = next((row[k] for k in _ANSWER_FIELDS if row.get(k) is not None), None)
    if answer is None:
        raise DataError(
            f"{where}: no answer; expected reward_model.ground_truth or one of "
            f"{', '.join(_ANSWER_FIELDS)}"
        )
    if hasattr(answer, "tolist"):
        answer = answer.tolist()
    if isinstance(answer, list):  # some verl sets store several acceptable answers
        answer = answer[0] if answer else ""
    if isinstance(answer, bool) or not isinstance(answer, str | int | float):
        raise DataError(
            f"{where}: the answer must be a string or a number, got {type(answer).__name__}"
        )
    answer = str(answer)
    if not answer.strip():
        raise EmptyAnswer(f"{where}: the answer is empty")
    meta = {k: row[k] for k in _META_FIELDS if row.get(k) is not None}
    if "source" in meta:  # test sets often say 'source' where verl says 'data_source'
        meta.setdefault("data_source", meta.pop("source"))
    return Prompt(
        id=prompt_id(messages, answer), messages=messages, answer=answer, meta=meta, where=where
    )


# --------------------------------------------------------------------------- file readers


def _read_text(path: Path) -> str:
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: not UTF-8 text (byte offset {e.start})") from None


def _iter_jsonl(path: Path, text: str) -> Iterator[tuple[dict, str]]:
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            yield json.loads(line), f"{path}:{n}"
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{n}: not valid JSON ({e.msg} at column {e.colno})") from None


def _iter_json(path: Path, text: str) -> Iterator[tuple[dict, str]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        if e.msg == "Extra data":  # several objects, one per line: JSON Lines named .json
            yield from _iter_jsonl(path, text)
            return
        raise DataError(
            f"{path}:{e.lineno}: not valid JSON ({e.msg} at column {e.colno})"
        ) from None
    if isinstance(data, dict):
        for key in ("data", "rows", "examples", "prompts"):
            if isinstance(data.get(key), list):
                data = data[key]
                break
        else:
            data = [data]
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a list of records, got {type(data).__name__}")
    for i, row in enumerate(data):
        yield row, f"{path}[{i}]"


def _iter_parquet(path: Path) -> Iterator[tuple[dict, str]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise DataError(f"{path}: not a readable parquet file ({e})") from None
    for i, row in enumerate(table.to_pylist()):
        yield row, f"{path} row {i}"


def load_file(path: str | Path) -> PromptSet:
    """Every record of a file as a Prompt; records with an empty answer are skipped and listed."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"data file {path} does not exist")
    if path.is_dir():
        raise DataError(
            f"data source {path} is a directory; expected a .jsonl, .json or .parquet file"
        )
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        rows = _iter_parquet(path)
    elif suffix in (".jsonl", ".json"):
        text = _read_text(path)
        rows = _iter_jsonl(path, text) if suffix == ".jsonl" else _iter_json(path, text)
    else:
        raise DataError(
            f"data file {path}: unknown format {suffix!r}; expected .jsonl, .json or .parquet"
        )
    prompts = PromptSet()
    for row, where in rows:
        try:
            prompts.append(row_to_prompt(row, where))
        except EmptyAnswer as e:
            prompts.skipped.append(str(e))
    if not prompts:
        why = f" ({len(prompts.skipped)} skipped: {prompts.skipped[0]})" if prompts.skipped else ""
        raise DataError(f"data file {path} holds no usable records{why}")
    return prompts


def task_prompts(task: TaskConfig, split: str) -> PromptSet:
    module = TASKS[task.name]
    parts = module.splits(task.levels, task.train_size, task.val_size, task.seed)
    if split not in parts:
        raise DataError(f"task split {task.name}:{split} does not exist; valid: {sorted(parts)}")
    out = []
    for p in parts[split]:
        messages = [{"role": "user", "content": module.instruction(p)}]
        out.append(
            Prompt(
                id=prompt_id(messages, str(p.answer)),
                messages=messages,
                answer=str(p.answer),
                text=p.question,
                meta={"level": p.level, "data_source": task.name, "solution": p.solution},
            )
        )
    if not out:
        raise DataError(f"task split {task.name}:{split} is empty (task.val_size=0?)")
    return PromptSet(out)


def parse_source(source: str) -> tuple[str, str] | None:
    """``(task, split)`` when ``source`` names a built-in task's split ('arith:train'), None for
    a file (an existing path wins over a task name: 'arith:train' may be a file)."""
    name, sep, split = source.partition(":")
    if sep and name in TASKS and not Path(source).exists():
        return name, split
    return None


def load_source(source: str, task: TaskConfig) -> PromptSet:
    """A file path, or 'TASK:SPLIT' for a built-in task (e.g. 'arith:train')."""
    parsed = parse_source(source)
    if parsed is not None:
        name, split = parsed
        if name != task.name:
            task = TaskConfig(**{**task.__dict__, "name": name})
        return task_prompts(task, split)
    return load_file(source)


# --------------------------------------------------------------------------- tokenisation


def render(prompt: Prompt, tokenizer, system_prompt: str | None = None) -> str:
    """Chat template when the tokenizer has one; otherwise the plain text form."""
    if getattr(tokenizer, "chat_template", None):
        messages = prompt.messages
        if system_prompt and messages[0]["role"] != "system":
            messages = [{"role": "system", "content": system_prompt}, *messages]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    if prompt.text is not None:
        return prompt.text
    return "\n".join(m["content"] for m in prompt.messages) + "\n"


@dataclass
class EncodedPrompts:
    prompts: list[Prompt]
    token_ids: list[list[int]]
    dropped: int


def encode_prompts(
    prompts: list[Prompt],
    tokenizer,
    max_prompt_tokens: int,
    on_too_long: str = "drop",
    system_prompt: str | None = None,
    source: str = "data",
) -> EncodedPrompts:
    kept, ids, dropped = [], [], 0
    texts = [render(p, tokenizer, system_prompt) for p in prompts]
    # The chat template already holds any BOS token; adding special tokens again would double it.
    encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]
    for p, tok in zip(prompts, encoded, strict=True):
        if len(tok) > max_prompt_tokens:
            if on_too_long == "error":
                where = p.where or f"{source}: prompt {p.id}"
                raise DataError(
                    f"{where}: the prompt has {len(tok)} tokens, over "
                    f"data.max_prompt_tokens={max_prompt_tokens} (raise it, or set "
                    "data.on_too_long=drop to skip such prompts)"
                )
            dropped += 1
            continue
        kept.append(p)
        ids.append(tok)
    if not kept:
        raise DataError(
            f"{source}: all {len(prompts)} prompts are longer than "
            f"data.max_prompt_tokens={max_prompt_tokens}"
        )
    return EncodedPrompts(kept, ids, dropped)


@dataclass
class Batches:
    """Epochs of shuffled prompt indices; the order is a pure function of (seed, epoch)."""

    num_prompts: int
    batch_size: int
    seed: int
    shuffle: bool
    epoch: int = 0
    position: int = 0  # batches already taken in this epoch

    @property
    def per_epoch(self) -> int:
        return max(self.num_prompts // self.batch_size, 1)

    def next(self) -> tuple[list[int], bool]:
        """(prompt indices, whether this batch starts a new epoch)."""
        new_epoch = False
        if self.position >= self.per_epoch:
            self.epoch, self.position, new_epoch = self.epoch + 1, 0, True
        order = np.arange(self.num_prompts)
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(self.num_prompts)
        start = self.position * self.batch_size
        self.position += 1
        return order[start : start + self.batch_size].tolist(), new_epoch


@dataclass
class PromptStream:
    """The epochs of :class:`Batches` one prompt at a time, for steps that offer a varying number
    of fresh candidates (``data.candidates_per_step``; deferred ones are the control's).

    Epoch ``e`` is the ``e``-th pass over the same seeded order as :class:`Batches` (every prompt,
    none dropped); ``position`` counts the prompts of it already taken. :meth:`draw` fills a
    step's candidates after the ones given first (the deferred prompts): when a prompt's turn
    comes while a prompt of the same key is already among them, that turn is used up and it is
    not offered twice. A step belongs to the epoch of its last fresh candidate, so prompts
    deferred at an epoch's end are offered in the next epoch (first, with their deferral counts).
    """

    num_prompts: int
    seed: int
    shuffle: bool
    epoch: int = 0
    position: int = 0

    def _order(self) -> np.ndarray:
        if self.shuffle:
            return np.random.default_rng([self.seed, self.epoch]).permutation(self.num_prompts)
        return np.arange(self.num_prompts)

    def draw(self, k: int, first: list[int], key=lambda i: i) -> list[int]:
        """``first`` then fresh prompts from the order, ``k`` indices of distinct ``key`` in all
        (``key(i)``: e.g. the prompt's id, so that two records of one prompt never meet)."""
        out, seen = list(first), {key(i) for i in first}
        if len(seen) != len(out):
            raise ValueError("the prompts given first must be distinct")
        order, spent = self._order(), 0
        while len(out) < k:
            if self.position >= self.num_prompts:
                self.epoch, self.position = self.epoch + 1, 0
                order = self._order()
            i = int(order[self.position])
            self.position += 1
            spent += 1
            if spent > 2 * self.num_prompts:  # two passes found no new key: too few prompts
                raise ValueError(f"fewer than {k} distinct prompts to offer")
            if key(i) not in seen:
                seen.add(key(i))
                out.append(i)
        return out


def check_fits_positions(
    sets: list[EncodedPrompts | None],
    max_new_tokens: int,
    max_positions: int | None,
    max_prompt_tokens: int,
    log,
) -> None:
    """Every kept prompt plus `rollout.max_new_tokens` must fit the model's positions: past
    them a rollout or validation fails deep inside the model (an IndexError), or, with rotary
    embeddings, silently degrades. A limit that only the configured maximum would cross is a
    warning: no prompt of this data set reaches it yet."""
    if not max_positions:
        return
    longest = max((len(t) for enc in sets if enc is not None for t in enc.token_ids), default=0)
    if longest + max_new_tokens > max_positions:
        raise DataError(
            f"the longest prompt has {longest} tokens; with rollout.max_new_tokens="
            f"{max_new_tokens} that is {longest + max_new_tokens} positions, over the model's "
            f"{max_positions} (max_position_embeddings / n_positions): keep data.max_prompt_tokens "
            f"+ rollout.max_new_tokens <= {max_positions}, e.g. data.max_prompt_tokens="
            f"{max(max_positions - max_new_tokens, 0)} or rollout.max_new_tokens="
            f"{max(max_positions - longest, 0)}"
        )
    if max_prompt_tokens + max_new_tokens > max_positions:
        log.info(
            f"warning: data.max_prompt_tokens={max_prompt_tokens} + rollout.max_new_tokens="
            f"{max_new_tokens} exceeds the model's {max_positions} positions; the prompts here "
            f"fit (longest {longest} tokens), but longer ones would fail: lower "
            f"data.max_prompt_tokens to {max(max_positions - max_new_tokens, 0)}"
        )
