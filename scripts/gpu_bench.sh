#!/usr/bin/env bash
# The GPU figures of docs/benchmarks.md, in one go (used on a lent H100 through the device tool:
#   PYTHONPATH=src python3 -m patchbench ...). Usage: bash scripts/gpu_bench.sh OUTDIR [lm|images|sweep]...
set -uo pipefail
OUT=${1:?usage: gpu_bench.sh OUTDIR [lm|images|sweep]...}; shift
B="python3 -m patchbench bench"
for part in "$@"; do
  case $part in
    lm)  # full size, the seed's context; then the fast path (compile) at a larger batch
      $B gpt2 pacing --batch-size 8 --dtype bf16 --reference --vocab-size 50257 --out "$OUT/lm-b8"
      $B gpt2 pacing --batch-size 16 --dtype bf16 --compile --vocab-size 50257 --out "$OUT/lm-b16-compile"
      ;;
    images)  # the ViT x ConvMixer table: batch 250, 192 px, fp16 autocast, 2 classes
      I="--batch-size 250 --image-size 192 --dtype fp16 --num-classes 2 --reference"
      $B resnet18 efficientnetv2_b0 $I --out "$OUT/img-cnn"
      $B vit24_linear $I --out "$OUT/img-vit24-linear"
      $B vit24_conv $I --out "$OUT/img-vit24-conv"
      $B convmixer24 $I --out "$OUT/img-cm24"
      $B vit16_linear $I --out "$OUT/img-vit16-linear"
      $B vit16_conv $I --out "$OUT/img-vit16-conv"
      $B convmixer16 $I --out "$OUT/img-cm16"
      $B convmixer16_d8 $I --out "$OUT/img-cm16-8"
      ;;
    sweep)  # does a CNN over tokens-as-image scale better with context than attention?
      $B gpt2 pacing --batch-size 4 --dtype bf16 --vocab-size 50257 --no-inference --sweep seq-len 256,512,1024,2048,4096 --out "$OUT/sweep-seq"
      ;;
  esac
done
