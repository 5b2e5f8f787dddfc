#!/usr/bin/env bash
# fastcam's whole GPU measurement in one prepared run (issues 11-14): because GPU time is scarce, one short
# run yields every number. Sections (any subset, in this order):
#   tests  the suite with CUDA tensors (backend="triton" vs "torch" on every method, every kernel against its
#          fastcam.ops reference, torchvision/timm/transformers models, CUDA graphs, OOM split, torchrun)
#          -> OUT/tests.json (passed/failed/skipped/errors + failures) and OUT/junit.xml
#   speed  fastcam bench, ResNet-50 224 px, batch 64 and 256, fp32 and bf16 autocast + channels_last, all
#          contenders; the kernel, clustering and deploy benchmarks -> OUT/bench_*.json, OUT/*.json
#   scale  explain_dataset over 10,000 synthetic images per method, images/s, store time, GPU busy, peak
#          memory, the largest batch that fits -> OUT/scale.json
# Every JSON carries the environment record (GPU, driver, versions, commit, date); OUT/environment.json adds
# the measured copy bandwidth and bf16 matmul rate. OUT/SUMMARY.md is the one table printed at the end.
#
# Usage, from the repository root:
#   bash bench/gpu_campaign.sh [--sections tests,speed,scale] [--out DIR] [--dry-run]
#   --dry-run  the same code paths on the CPU at tiny sizes (tests/bench/test_gpu_campaign.py runs it in CI)
#
# On a lent H100/H200 (docs/gpu-campaign.md): the image lacks a few packages; carry them as wheels in .whl/
# (bash bench/fetch_gpu_wheels.sh, here; the exact list is bench/gpu_wheels.txt) and the commit in
# bench/.campaign-commit (the copy there has no .git). Planned time on an H100/H200: tests ~3 min, speed
# ~3 min, scale ~2 min (each section has its own time limit below, so one slow section cannot eat the rest).
set -uo pipefail

SECTIONS="tests,speed,scale"
OUT=""
DRY=0
while [ $# -gt 0 ]; do
  case "$1" in
    --sections) SECTIONS="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    --dry-run) DRY=1; shift ;;
    -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
    *) echo "gpu_campaign: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python3}"
export PYTHONUNBUFFERED=1
OUT="${OUT:-bench/results/gpu-campaign}"
mkdir -p "$OUT"
has() { case ",$SECTIONS," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }
step() { echo; echo "=== gpu_campaign: $* ($(date -u +%H:%M:%S))"; }
FAILED=0
run() {  # run LIMIT_S CMD...: a step with its own time limit; a failure is recorded, the campaign goes on
  local limit="$1"; shift
  timeout --kill-after=10 "$limit" "$@"
  local rc=$?
  if [ $rc -ne 0 ]; then echo "gpu_campaign: step failed (exit $rc): $*" >&2; FAILED=1; fi
  return 0
}

if [ -f bench/.campaign-commit ] && [ -z "${FASTCAM_COMMIT:-}" ]; then
  export FASTCAM_COMMIT="$(cat bench/.campaign-commit)"
fi
if [ "$DRY" = 0 ] && [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  step "installing the carried wheels (bench/gpu_wheels.txt)"
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/fastcam-site .whl/*.whl \
    && export PYTHONPATH="/tmp/fastcam-site:${PYTHONPATH:-}"
fi
if ! "$PY" -c "import fastcam.kernels" 2>/dev/null; then  # kernels/ installs as fastcam.kernels
  step "installing fastcam (editable, no dependencies)"
  "$PY" -m pip install -q --no-index --no-deps --no-build-isolation --use-pep517 -e . || { echo "gpu_campaign: cannot install fastcam" >&2; exit 1; }
fi

DRYFLAG=()
if [ "$DRY" = 1 ]; then export TRITON_INTERPRET=1 CUDA_VISIBLE_DEVICES=""; fi  # CPU: kernels in the interpreter
[ "$DRY" = 1 ] && DRYFLAG=(--dry-run)
step "environment and ceilings"
run 120 "$PY" bench/campaign/env.py --out "$OUT/environment.json" "${DRYFLAG[@]}"

if has tests; then
  step "tests"
  start=$(date +%s)
  if [ "$DRY" = 1 ]; then
    run 300 "$PY" -m pytest -q -p no:cacheprovider --junitxml "$OUT/junit.xml" -o junit_family=xunit1 \
      tests/methods/test_contract.py -k "contract_shapes and GradCAM"
  else
    # the whole suite; the per-test limit keeps a hung CUDA test from eating the section. Each result is named as
    # it comes (-v, one line per failure) in tests.log: a run cut by the section's limit writes no junit.xml, and a
    # partial GPU run once lost every failure's name that way
    run 270 "$PY" -m pytest -v --tb=line -rfE -p no:cacheprovider --timeout 120 --junitxml "$OUT/junit.xml" \
      -o junit_family=xunit1 --maxfail 50 > "$OUT/tests.log" 2>&1
    grep -E " (FAILED|ERROR)" "$OUT/tests.log" | head -100 || true
  fi
  "$PY" bench/campaign/junit_summary.py "$OUT/junit.xml" --log "$OUT/tests.log" --env "$OUT/environment.json" --out "$OUT/tests.json" \
    --wall-s "$(( $(date +%s) - start ))"
fi

if has speed; then
  step "speed: fastcam bench"
  if [ "$DRY" = 1 ]; then
    run 300 "$PY" -m fastcam bench --model fastcam:tiny_resnet --size 32 --batch 2 --device cpu --warmup 1 --repeats 1 \
      --max-time 2 --quiet --contenders inference,gradcam,cfcam,softcam-inference,softcam --out "$OUT/bench_dry.json"
    run 300 "$PY" -m fastcam bench --model fastcam:tiny_resnet --size 32 --batch 2 --device cpu --warmup 1 --repeats 1 \
      --max-time 2 --quiet --channels-last --contenders inference,gradcam --out "$OUT/bench_dry_cl.json"
  else
    FAST="inference,gradcam,gradcampp,cfcam,softcam-inference,softcam,layercam,xgradcam,hirescam,gradcamelementwise,eigencam,eigengradcam,ablationcam,torchcam-gradcam,torchcam-layercam,torchcam-xgradcam,captum-gradcam,pgc-gradcam,pgc-gradcampp,pgc-eigencam,compat-gradcam,compat-gradcampp,compat-eigencam,released-cfcam"
    for batch in 64 256; do
      run 150 "$PY" -m fastcam bench --model fastcam:resnet50 --size 224 --batch "$batch" --device cuda --warmup 3 --repeats 10 \
        --max-time 8 --quiet --contenders "$FAST" --out "$OUT/bench_resnet50_b${batch}_fp32.json"
      run 150 "$PY" -m fastcam bench --model fastcam:resnet50 --size 224 --batch "$batch" --device cuda --warmup 3 --repeats 10 \
        --max-time 8 --quiet --amp bf16 --channels-last --contenders "$FAST" --out "$OUT/bench_resnet50_b${batch}_bf16cl.json"
    done
    # Score-CAM makes B·C masked forwards (2,048 per image at layer4), Ablation-CAM B·C ablated copies: timed on
    # small batches, ours vs torchcam's and pytorch-grad-cam's, and pytorch-grad-cam's calls through fastcam.compat
    run 180 "$PY" -m fastcam bench --model fastcam:resnet50 --size 224 --batch 2 --device cuda --warmup 1 --repeats 3 \
      --max-time 20 --quiet --scorecam-batch-size 512 \
      --contenders inference,scorecam,torchcam-scorecam,pgc-scorecam,compat-scorecam,ablationcam,pgc-ablationcam,compat-ablationcam \
      --out "$OUT/bench_resnet50_b2_scorecam.json"
  fi
  step "speed: kernels, clustering, deploy"
  if [ "$DRY" = 1 ]; then
    run 300 "$PY" bench/bench_kernels_combine.py --smoke --out "$OUT/kernels_combine.json"
    run 300 "$PY" bench/bench_softcam_head.py --smoke --out "$OUT/softcam_head.json"
    run 300 "$PY" bench/bench_dbscan.py --shapes 32 --batch 2 --repeats 1 --device cpu --out "$OUT"
  else
    run 60 "$PY" bench/bench_kernels_combine.py --out "$OUT/kernels_combine.json"
    run 90 "$PY" bench/bench_softcam_head.py --out "$OUT/softcam_head.json"
    run 120 "$PY" bench/bench_dbscan.py --device cuda --repeats 3 --out "$OUT"
    run 60 "$PY" bench/bench_dbscan.py --workload quantile --device cuda --repeats 3 --out "$OUT"
    run 60 "$PY" bench/bench_deploy.py --device cuda --rounds 5 --out "$OUT/deploy.json"
  fi
fi

if has scale; then
  step "scale"
  if [ "$DRY" = 1 ]; then
    run 300 "$PY" bench/campaign/scale.py --dry-run --out "$OUT/scale.json"
  else
    run 180 "$PY" bench/campaign/scale.py --images 10000 --batches 64,256,max --modes fp32,bf16-cl \
      --methods gradcam,cfcam,softcam --out "$OUT/scale.json"
  fi
fi

step "summary"
"$PY" bench/campaign/summary.py "$OUT"
exit $FAILED
