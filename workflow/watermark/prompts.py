"""C4-style documents -> prompts and human completions, as in Kirchenbauer et al. §6.

The last ``completion_tokens`` tokens of a document are the human completion (the baseline a
watermarked generation of the same length is compared with); the tokens before them, at most
``max_prompt_tokens`` of them (the latest ones, so prompt + generation fit the model's
context), are the prompt. Documents with fewer than ``min_prompt_tokens`` prompt tokens are
passed over and counted, as the paper does.
"""

from __future__ import annotations

import gzip
import json
import logging
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from workflow.common.errors import BadSample, InputError, Skips
from workflow.watermark.records import identifier, read_records, string, token_ids

log = logging.getLogger("lsai.watermark")


class Tokenizer(Protocol):
    def encode(self, text: str, add_special_tokens: bool = ...) -> list[int]: ...

    def decode(self, ids: list[int], skip_special_tokens: bool = ...) -> str: ...


@dataclass
class Prompt:
    """One prompt with its human completion; ids are kept so no re-tokenisation drifts."""

    id: str
    prompt: str
    completion: str
    prompt_ids: list[int]
    completion_ids: list[int]


@dataclass
class PromptCounts:
    documents: int = 0
    too_short: int = 0
    kept: int = 0
    skipped: Skips = field(default_factory=Skips)

    def as_dict(self) -> dict[str, int]:
        return {"documents": self.documents, "too_short": self.too_short, "kept": self.kept,
                "bad_lines": len(self.skipped)}  # fmt: skip


def _open(path: Path) -> Any:
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else path.open()


def read_documents(path: str | Path, policy: str, skips: Skips) -> Iterator[tuple[str, str]]:
    """(id, text) of every line of a C4 JSONL file (``.gz`` too); a malformed line follows
    ``policy`` (``on_bad_sample``), a missing or undecodable file stops the run."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "documents file not found")
    try:
        with _open(path) as lines:
            for number, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                try:
                    record = _record(path, number, line)
                except BadSample as err:
                    skips.handle(err, f"line {number}", policy, log)
                    continue
                yield str(record.get("url") or f"{path.name}:{number}"), record["text"]
    except (UnicodeDecodeError, gzip.BadGzipFile, EOFError) as err:
        raise InputError(path, f"not a readable JSONL file: {err}") from None


def _record(path: Path, number: int, line: str) -> Mapping[str, Any]:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        raise BadSample(path, f"line {number}: not valid JSON ({err.msg})") from None
    if not isinstance(record, dict) or not isinstance(record.get("text"), str):
        raise BadSample(path, f'line {number}: no "text" string')
    return record


def cut(
    doc_id: str,
    text: str,
    tokenizer: Tokenizer,
    completion_tokens: int,
    min_prompt_tokens: int,
    max_prompt_tokens: int,
) -> Prompt | None:
    """The document as prompt + completion, or None when its prompt would be too short."""
    ids = tokenizer.encode(text, add_special_tokens=False)
    prompt_ids, completion_ids = ids[:-completion_tokens], ids[-completion_tokens:]
    if len(completion_ids) < completion_tokens or len(prompt_ids) < min_prompt_tokens:
        return None
    prompt_ids = prompt_ids[-max_prompt_tokens:]
    return Prompt(
        id=doc_id,
        prompt=tokenizer.decode(prompt_ids, skip_special_tokens=True),
        completion=tokenizer.decode(completion_ids, skip_special_tokens=True),
        prompt_ids=prompt_ids,
        completion_ids=completion_ids,
    )


def make_prompts(
    documents: list[str | Path],
    tokenizer: Tokenizer,
    settings: Mapping[str, Any],
    policy: str,
) -> tuple[list[Prompt], PromptCounts]:
    """The first ``n`` long-enough documents, in file order, as prompts."""
    counts = PromptCounts()
    prompts: list[Prompt] = []
    taken: set[str] = set()
    for path in documents:
        for doc_id, text in read_documents(path, policy, counts.skipped):
            counts.documents += 1
            prompt = cut(
                doc_id, text, tokenizer, int(settings["completion_tokens"]),
                int(settings["min_prompt_tokens"]), int(settings["max_prompt_tokens"]),
            )  # fmt: skip
            if prompt is None:
                counts.too_short += 1
                continue
            prompt.id = _unique_id(prompt.id, taken)
            prompts.append(prompt)
            if len(prompts) == int(settings["n"]):
                counts.kept = len(prompts)
                return prompts, counts
    counts.kept = len(prompts)
    return prompts, counts


def _unique_id(doc_id: str, taken: set[str]) -> str:
    """The id, or ``id#2``, ``#3``... when an earlier prompt has it: C4 may repeat a URL, and
    every later stage keys its records by this id."""
    unique, copy = doc_id, 1
    while unique in taken:
        copy += 1
        unique = f"{doc_id}#{copy}"
    taken.add(unique)
    return unique


def prompts_jsonl(prompts: list[Prompt]) -> str:
    return "".join(json.dumps(asdict(p)) + "\n" for p in prompts)


def read_prompts(path: str | Path) -> list[Prompt]:
    """Prompts written by :func:`prompts_jsonl`; anything else is an InputError."""
    ids = token_ids()
    fields = {"id": identifier, "prompt": string, "completion": string, "prompt_ids": ids,
              "completion_ids": ids}  # fmt: skip
    records = read_records(path, fields, "prompt", identity=("id",))
    return [Prompt(**{k: r[k] for k in fields}) for r in records]
