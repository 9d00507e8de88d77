#!/usr/bin/env bash
# A CLI session: inspect a model, estimate one configuration, plan training and serving,
# explain, verify and diff the plans, and ask what-if questions. Runs in about a minute on a laptop.
set -euo pipefail
out=${1:-$(mktemp -d)}
planner inspect llama-3.1-70b --phase decode --batch 32 --context-len 4096
planner estimate llama-3.1-70b --cluster 8xH100-SXM --tp 8 --phase decode --batch 32 --input-len 4096
planner plan llama-3.1-70b --cluster 8xdgx-h100 --workload train -o "$out/train.json"
planner explain "$out/train.json"
planner verify "$out/train.json"
planner plan llama-3.1-70b --cluster 8xdgx-h100 --workload train --pp 8 -o "$out/train_pp8.json" --report "$out/report"
planner diff "$out/train.json" "$out/train_pp8.json"
planner plan llama-3-8b --workload chat --slo ttft=0.5,tpot=0.05 --rate 4 -o "$out/chat.json"
planner whatif llama-3.1-70b --cluster 8xH100-SXM --cluster 8xA100-SXM-80GB --vary rate=1,4 --csv "$out/whatif.csv"
echo "outputs in $out"
