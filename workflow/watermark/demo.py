"""The demo dataset: held-out news-like documents in C4 ``realnewslike`` layout.

The documents come from the same generator as the demo LM's training corpus but from another
seed, so prompts are text the model has not seen. A few planted lines exercise the input
checks a real dump needs: malformed JSON (``on_bad_sample``) and documents too short to
leave ``min_prompt_tokens`` of prompt (passed over and counted, as in the paper).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from workflow.common.atomic import write_json
from workflow.watermark.corpus import c4_records, documents
from workflow.watermark.records import RawLine, write_records

#: The file name of C4's one validation shard of realnewslike, as ``c4/realnewslike`` ships it.
DOCUMENTS = "c4-validation.00000-of-00001.json.gz"
BROKEN_LINE = '{"text": "a line cut off in the middle of'


def write_demo(root: str | Path, settings: Mapping[str, Any]) -> dict[str, Any]:
    """``settings``: documents, short_documents, bad_lines, seed (schema $defs/watermark_demo)."""
    root = Path(root)
    seed = int(settings["seed"])
    texts = documents(int(settings["documents"]), seed)
    short = [" ".join(text.split()[:30]) for text in documents(int(settings["short_documents"]),
                                                                seed + 1)]  # fmt: skip
    # short documents and broken lines early in the file, where the first n prompts are cut
    lines: list[Any] = c4_records(texts, seed)
    for i, record in enumerate(c4_records(short, seed + 1)):
        lines.insert(3 * i + 1, record)
    for i in range(int(settings["bad_lines"])):
        lines.insert(3 * i + 2, RawLine(BROKEN_LINE))
    path = root / DOCUMENTS
    write_records(path, lines)
    records = len(texts) + len(short)
    manifest = {
        "documents": [DOCUMENTS],
        "records": records,
        "long_documents": len(texts),
        "short_documents": len(short),
        "bad_lines": int(settings["bad_lines"]),
        "seed": seed,
    }
    write_json(root / "manifest.json", manifest)
    return manifest
