#!/usr/bin/env bash
# A/B of two commits in one sitting: train_throughput --quick and decode_speed --quick, one thread,
# interleaved (old, new, old, new), each side running its own code from a temporary worktree.
#   bash benchmarks/ab_commits.sh OLD_REV [NEW_REV]     # results in benchmarks/results/ab/ (or $AB_OUT)
set -euo pipefail
cd "$(dirname "$0")/.."
old_rev=${1:?usage: ab_commits.sh OLD_REV [NEW_REV]}
new_rev=${2:-HEAD}
py=${PYTHON:-.venv/bin/python}
out=${AB_OUT:-benchmarks/results/ab}                 # AB_OUT=DIR keeps earlier A/B results
mkdir -p "$out"
tmp=$(mktemp -d)
trap 'git worktree remove --force "$tmp/old"; git worktree remove --force "$tmp/new"; rm -rf "$tmp"' EXIT
git worktree add -q --detach "$tmp/old" "$old_rev"
git worktree add -q --detach "$tmp/new" "$new_rev"
py="$(cd "$(dirname "$py")" && pwd)/$(basename "$py")"    # absolute, the venv link kept
for bench in train_throughput decode_speed; do
  for i in 1 2; do
    for side in old new; do
      echo "$bench $side $i $(date +%T)"
      (cd "$tmp/$side" && PYTHONPATH="$tmp/$side/src" "$py" "benchmarks/$bench.py" --quick --threads 1 \
        --out "$OLDPWD/$out/${bench}_${side}_$i.json" > /dev/null)
    done
  done
done
"$py" - "$out" "$old_rev" "$new_rev" <<'PY'
import json, sys
from pathlib import Path
out, old_rev, new_rev = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
summary = {"old": old_rev, "new": new_rev, "train_qkv_vs_marian": {}, "decode_qkv_sentences_per_cpu_s": {}}
for side in ("old", "new"):
    for i in (1, 2):
        t = json.loads((out / f"train_throughput_{side}_{i}.json").read_text())
        for name, row in t.get("results", t).items():
            if isinstance(row, dict) and "qkv_vs_marian" in row:
                summary["train_qkv_vs_marian"].setdefault(name, {}).setdefault(side, []).append(row["qkv_vs_marian_cpu"])
        d = json.loads((out / f"decode_speed_{side}_{i}.json").read_text())
        for r in d["results"]:
            key = f"{r['system']} {r['search']} b{r['batch_size']} {r['new_tokens']} tokens"
            summary["decode_qkv_sentences_per_cpu_s"].setdefault(key, {}).setdefault(side, []).append(r["sentences_per_cpu_s"])
text = json.dumps(summary, indent=1)
(out / "summary.json").write_text(text + "\n")
print(text)
PY
