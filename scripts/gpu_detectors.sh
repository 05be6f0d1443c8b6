#!/bin/bash
# The figures of docs/gpu-throughput.md, "The detectors on an NVIDIA H200 host": each detector on
# generated 2200x1700 pictures on the GPU and on 2 of the host's cores, the default's accuracy on
# both, and sam-mode throughput per detector (random-init SAM when SAM_MODEL_PATH is not a file).
# Usage, from the repository root with the package importable: scripts/gpu_detectors.sh OUT_DIR
set -u
OUT=${1:?usage: scripts/gpu_detectors.sh OUT_DIR}
S="$OUT/pictures"
mkdir -p "$OUT"
python3 scripts/speed_pictures.py "$S" || exit 1
run_eval() {  # run_eval TAG DETECTOR FOLDER... (seconds per picture in $OUT/TAG.json)
  local tag=$1 det=$2
  shift 2
  python3 -m sam_droplet.eval --segmenter classical --detector "$det" --json "$OUT/$tag.json" "$@"
}
echo "== detectors on the GPU (SAM_DEVICE=auto), one warm process"
for det in classical net combined; do run_eval "gpu_$det" "$det" "$S/warm" "$S/field" "$S/packed2200"; done
echo "== the same on 2 cores of this host"
for det in classical net combined; do
  SAM_DEVICE=cpu TORCH_THREADS=2 taskset -c 0,1 \
    python3 -m sam_droplet.eval --segmenter classical --detector "$det" --json "$OUT/cpu2_$det.json" \
    "$S/warm" "$S/field" "$S/packed2200"
done
echo "== the default on every generated set (seeds 3-4): GPU (bf16) against CPU"
run_eval acc_gpu combined --quiet "$S"/syn/*
SAM_DEVICE=cpu run_eval acc_cpu combined --quiet "$S"/syn/*
echo "== sam-mode throughput, 8 workers, per detector"
for det in classical net combined; do
  python3 -m sam_droplet.tools.bench --throughput-only --workers 8 --rounds 2 --detector "$det" \
    --write "$OUT/throughput_$det.md"
done
echo "== sam mode on the 2200x1700 fields, one warm process"
CKPT=${SAM_MODEL_PATH:-}
if [ ! -f "$CKPT" ]; then
  CKPT="$OUT/random_vit_t.pt"
  python3 -c "import sys; from sam_droplet.sam.model import save_random_checkpoint as s; s(sys.argv[1], 'vit_t')" "$CKPT"
fi
SAM_MODEL_PATH=$CKPT python3 -m sam_droplet.eval --segmenter sam --detector combined --json "$OUT/sam_combined.json" \
  "$S/warm" "$S/field"
