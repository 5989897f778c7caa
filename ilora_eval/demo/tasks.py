"""The demo's unseen tasks: their documents (JSONL pools) and the lm-eval YAMLs that read them.

Three kinds, all held out from library training (prompts use each skill's *new* wording, never
the one its LoRA was trained on):
- mixture: documents of several skills interleaved in one task; each document needs another
  adapter (the case for instance-level composition);
- composition: one skill applied to another's answer (``COMPOSITES``, also held out of the base
  model's pretraining); no single adapter covers it, a weighted pair can;
- paraphrase: one skill under its new wording (a task-level composition is enough here).

Each task is one pool of documents with distinct inputs. The YAMLs read it with the task pack's
``load_unseen``, so the split is the pack's: a fixed held-out draw of ``N_ADAPT`` adaptation
documents, or with ``--metadata '{"adapt_seed": S}'`` the per-seed protocol (the pool shuffled
with seed S, the first ``N_ADAPT`` adapt, the rest are scored). YAMLs hold absolute paths, so
they are written at run time (``write_task_yamls``), never shipped.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from ilora_eval.demo.skills import COMPOSITES, get_skill, prompt, target

GROUP = "demo"
N_ADAPT = 5
MAX_GEN_TOKS = 8
COMPOSITES_BY_NAME = {c.name: c for c in COMPOSITES}


@dataclass(frozen=True)
class TaskSpec:
    name: str
    kind: str  # "mixture" | "composition" | "paraphrase"
    parts: tuple[str, ...]  # skills (mixture, paraphrase) or one composite (composition)
    n_docs: int  # pool size: adaptation + scored documents (fewer when the payloads run out)
    about: str

    def skills(self) -> set[str]:
        """Library skills the task's documents draw on."""
        if self.kind == "composition":
            c = COMPOSITES_BY_NAME[self.parts[0]]
            return {c.first, c.second}
        return set(self.parts)


TASK_SPECS: tuple[TaskSpec, ...] = (
    TaskSpec("demo_mix_six", "mixture", ("twice", "max_digit", "add", "next_day", "any_true", "word_length"), 45,
             "six skills of six payload formats"),
    TaskSpec("demo_mix_digit", "mixture", ("twice", "spell_digit", "is_even"), 28,
             "three skills on one digit: only the wording tells them apart"),
    TaskSpec("demo_mix_days_bools", "mixture", ("next_day", "prev_day", "all_true", "any_true"), 30,
             "two pairs of look-alike skills (days, truth values)"),
    TaskSpec("demo_mix_arith", "mixture", ("add", "subtract", "max_digit", "min_digit"), 40,
             "two pairs of look-alike skills (digit pairs, digit lists)"),
    TaskSpec("demo_twice_max", "composition", ("twice_max",), 35, "twice the biggest digit"),
    TaskSpec("demo_spell_sum", "composition", ("spell_sum",), 25, "the sum of two digits, in words"),
    TaskSpec("demo_even_count", "composition", ("even_count",), 35, "is the number of listed items even"),
    TaskSpec("demo_spell_min", "composition", ("spell_min",), 35, "the lowest digit, in words"),
    TaskSpec("demo_para_count", "paraphrase", ("count_items",), 30, "count the items, new wording"),
    TaskSpec("demo_para_max", "paraphrase", ("max_digit",), 30, "the biggest digit, new wording"),
)
SPECS_BY_NAME = {t.name: t for t in TASK_SPECS}


def tasks_for(skills: Iterable[str]) -> list[TaskSpec]:
    """The demo tasks a library of ``skills`` can serve (the quick test library has fewer)."""
    have = set(skills)
    return [t for t in TASK_SPECS if t.skills() <= have]


def _doc(instruction: str, payload: str, answer: str, source: str, **extra) -> dict:
    return {"input": prompt(instruction, payload), "target": target(answer), "source_skill": source, **extra}


def _unique_docs(draw, n: int, tries: int = 200) -> list[dict]:
    """Up to ``n`` docs with distinct inputs (small payload spaces give fewer)."""
    docs: list[dict] = []
    seen: set[str] = set()
    misses = 0
    while len(docs) < n and misses < tries:
        doc = draw()
        if doc["input"] in seen:
            misses += 1
            continue
        seen.add(doc["input"])
        docs.append(doc)
    return docs


def _interleave(groups: list[list[dict]]) -> list[dict]:
    out: list[dict] = []
    for i in range(max(map(len, groups), default=0)):
        out.extend(g[i] for g in groups if i < len(g))
    return out


def task_docs(spec: TaskSpec, rng: random.Random) -> list[dict]:
    """The task's pool, skills interleaved (so any prefix mixes them); inputs are distinct."""
    if spec.kind == "composition":
        c = COMPOSITES_BY_NAME[spec.parts[0]]
        return _unique_docs(lambda: _doc(c.instruction, *c.sample(rng), c.name, components=[c.first, c.second]),
                            spec.n_docs)
    per_skill = -(-spec.n_docs // len(spec.parts))
    groups = [_unique_docs(lambda s=get_skill(name): _doc(s.new_instruction, *s.sample(rng), s.name), per_skill)
              for name in spec.parts]
    return _interleave(groups)[:spec.n_docs]


def skill_eval_docs(skill, n: int, rng: random.Random) -> list[dict]:
    """Held-out examples of one skill in its *training* wording (fresh draws; payload spaces
    of a few values repeat)."""
    return [_doc(skill.instruction, *skill.sample(rng), skill.name) for _ in range(n)]


def write_jsonl(path: Path, docs: Iterable[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        for doc in docs:
            fh.write(json.dumps(doc, sort_keys=True) + "\n")


def read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def data_file(data_dir: Path, task: str) -> Path:
    return Path(data_dir) / f"{task}.jsonl"


def write_data(data_dir: Path, specs: Iterable[TaskSpec], seed: int) -> None:
    for spec in specs:
        # one stream per task: adding a task never changes another's documents
        write_jsonl(data_file(data_dir, spec.name), task_docs(spec, random.Random(f"{seed}:demo-task:{spec.name}")))


# --- lm-eval YAMLs ---------------------------------------------------------------------------


def _q(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid double-quoted YAML scalar


def task_yaml(task: str, data: Path) -> str:
    return f"""# generated by ilora_eval.demo at run time (absolute path: never commit)
task: {task}
custom_dataset: !function ilora_eval.tasks.common.load_unseen
dataset_kwargs:
  unseen:
    task: {task}
    data_files: {_q(str(Path(data).resolve()))}
    n_adapt: {N_ADAPT}
test_split: test
fewshot_split: adapt
num_fewshot: 0
output_type: generate_until
doc_to_text: "{{{{input}}}}"
doc_to_target: "{{{{target}}}}"
target_delimiter: ""
generation_kwargs:
  until: ["\\n"]
  do_sample: false
  max_gen_toks: {MAX_GEN_TOKS}
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
metadata:
  version: 2.0
"""


def group_yaml(tasks: Iterable[str]) -> str:
    lines = "\n".join(f"  - {t}" for t in tasks)
    return f"""# generated by ilora_eval.demo
group: {GROUP}
task:
{lines}
aggregate_metric_list:
  - metric: exact_match
    aggregation: mean
    weight_by_size: false
metadata:
  version: 2.0
"""


def write_task_yamls(tasks_dir: Path, data_dir: Path, tasks: Iterable[str]) -> Path:
    tasks = list(tasks)
    tasks_dir = Path(tasks_dir)
    tasks_dir.mkdir(parents=True, exist_ok=True)
    for old in tasks_dir.glob("*.yaml"):  # a task dropped since the last run must not stay indexed
        old.unlink()
    for task in tasks:
        (tasks_dir / f"{task}.yaml").write_text(task_yaml(task, data_file(data_dir, task)), encoding="utf-8")
    (tasks_dir / f"{GROUP}.yaml").write_text(group_yaml(tasks), encoding="utf-8")
    return tasks_dir
