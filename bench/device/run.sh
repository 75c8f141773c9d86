#!/usr/bin/env bash
# The benchmark on a lent CUDA machine without network (bench/device/bundle.sh packs what it lacks):
#
#   bash bench/device/run.sh [bench.perf options]     # from the repository root, .bundle/ beside it
#
# Each step runs on its own with a time limit (LIMIT_INDEXING=300 ...), so a slow step costs only
# its own figures; the tables go to stdout and $OUT/<TAG><step>.log, the JSON to $OUT/<TAG>figures.tgz.
set -uo pipefail
out=${OUT:-/tmp/bench-out}
site=/tmp/cropsearch-site
mkdir -p "$out" "$site"
tar -xJf .bundle/site.tar.xz -C "$site" || exit 1
export PYTHONPATH="$site:$PWD" HF_HUB_OFFLINE=1 PREFECT_SERVER_ANALYTICS_ENABLED=false PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import sys, torch, transformers, ultralytics, lancedb, prefect; \
print(sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.cuda.is_available(), \
'transformers', transformers.__version__, 'ultralytics', ultralytics.__version__, \
'lancedb', lancedb.__version__, 'prefect', prefect.__version__)" || exit 1
for step in ${STEPS:-indexing memory queries}; do
    limit_var="LIMIT_${step^^}"
    timeout "${!limit_var:-300}" python3 -m bench.perf --work /tmp/bench --only "$step" "$@" 2>&1 \
        | grep -v " | INFO " | tee "$out/${TAG:-}$step.log"
    # Every step's JSON so far, in one file (a call brings back at most 8).
    (cd /tmp/bench && tar -czf "$out/${TAG:-}figures.tgz" perf-*.json 2>/dev/null)
done
true
