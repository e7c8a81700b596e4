#!/usr/bin/env bash
# Transfer learning on Fashion-MNIST: the batchnorm seed CNN trained on classes 0-4 (T-shirt, Trouser, Pullover, Dress, Coat;
# 30,000 images) is transferred to classes 5-9 (Sandal, Shirt, Sneaker, Bag, Ankle boot) with 500 training
# images per class, and compared with the same network trained from scratch on those 2,500 images. Test accuracy
# is on all 5,000 test images of classes 5-9.
#
#   bench/transfer_fashion.sh [--seeds "1 2 3"] [--epochs 15] [--base-epochs 5] [--out-dir DIR] [--cnn PATH]
#
# The network is samples/models/seed_cnn_bn.cnn (batchnorm, dropout) with a 5-class head. Per seed, on task B,
# each for --epochs epochs with --val-split 0.1, --monitor val_accuracy and --restore-best-weights:
#   scratch       the network trained from scratch on the 2,500 images
#   fine-tuned    --init-from the base model --replace-head 5: every layer trained on from the base's weights
#   frozen        --init-from the base model --replace-head 5 --freeze flatten: the convolutions kept, the dense
#                 layers trained (feature extraction)
#   unfrozen      the frozen run's model, all layers trained on for 5 epochs at lr 1e-4
# Prints a Markdown table of test accuracy (test loss) and the validation accuracy after the first epoch, for
# bench/RESULTS.md, "Transfer learning".
set -euo pipefail

seeds="1 2 3"
epochs=15
base_epochs=5
out=/tmp/cnn-transfer
here="$(cd "$(dirname "$0")/.." && pwd)"
cnn="$here/build/cnn"
data=/usr/share/datasets/fashion-mnist
while [ $# -gt 0 ]; do
  case "$1" in
    --seeds) seeds="$2"; shift 2 ;;
    --epochs) epochs="$2"; shift 2 ;;
    --base-epochs) base_epochs="$2"; shift 2 ;;
    --out-dir) out="$2"; shift 2 ;;
    --cnn) cnn="$2"; shift 2 ;;
    --data) data="$2"; shift 2 ;;
    *) echo "usage: $0 [--seeds \"1 2 3\"] [--epochs N] [--base-epochs N] [--out-dir DIR] [--cnn PATH] [--data DIR]" >&2
       exit 2 ;;
  esac
done
[ -x "$cnn" ] || { echo "$0: $cnn is not built (cmake --build build --target cnn)" >&2; exit 1; }
mkdir -p "$out/A" "$out/B"

# the two tasks as IDX files: A = classes 0-4 (all), B = classes 5-9 (500 a class for training), labels 0-4
python3 - "$data" "$out" <<'EOF'
import gzip, random, struct, sys
src, out = sys.argv[1], sys.argv[2]
def read(name):
    with gzip.open(f"{src}/{name}-ubyte.gz", "rb") as f:
        return f.read()
def images(b):
    n, h, w = struct.unpack(">III", b[4:16])
    return [b[16 + i * h * w:16 + (i + 1) * h * w] for i in range(n)], h, w
def write(dir, split, imgs, labels, h, w):
    with open(f"{dir}/{split}-images-idx3-ubyte", "wb") as f:
        f.write(struct.pack(">IIII", 0x803, len(imgs), h, w) + b"".join(imgs))
    with open(f"{dir}/{split}-labels-idx1-ubyte", "wb") as f:
        f.write(struct.pack(">II", 0x801, len(labels)) + bytes(labels))
rng = random.Random(2026)
for split, prefix in (("train", "train"), ("t10k", "t10k")):
    imgs, h, w = images(read(f"{prefix}-images-idx3"))
    labels = read(f"{prefix}-labels-idx1")[8:]
    a = [i for i in range(len(labels)) if labels[i] < 5]
    b = [i for i in range(len(labels)) if labels[i] >= 5]
    if split == "train":  # 500 of each class of task B, drawn at random once
        b = sorted(sum((rng.sample([i for i in b if labels[i] == c], 500) for c in range(5, 10)), []))
    write(f"{out}/A", split, [imgs[i] for i in a], [labels[i] for i in a], h, w)
    write(f"{out}/B", split, [imgs[i] for i in b], [labels[i] - 5 for i in b], h, w)
    print(f"{split}: task A {len(a)} images, task B {len(b)} images", file=sys.stderr)
EOF

model="$out/seed_cnn_bn5.cnn"
sed -E 's/^dense( +)10 softmax/dense\15 softmax/' "$here/samples/models/seed_cnn_bn.cnn" > "$model"
grep -Eq '^dense +5 softmax' "$model" || { echo "$0: could not make a 5-class seed CNN" >&2; exit 1; }

acc() { sed -n 's/^test loss: \([0-9.]*\) - test accuracy: \([0-9.]*\)$/\2 \1/p' "$1" | tail -1; }
# validation accuracy after epoch 1, from the CSV log (column 5)
first() { awk -F, 'NR == 2 { print $5 }' "$1"; }
cell() { awk -v a="$1" -v l="$2" -v f="$3" 'BEGIN { printf "%.2f%% (%.3f; %.1f%%)", 100 * a, l, 100 * f }'; }
common=(--batch 64 --optimizer adam --val-split 0.1 --monitor val_accuracy --restore-best-weights --quiet)

echo "| seed | base, classes 0-4 | scratch | fine-tuned | frozen | frozen, then unfrozen |"
echo "|---:|---:|---:|---:|---:|---:|"
for s in $seeds; do
  d="$out/seed$s"
  mkdir -p "$d"
  "$cnn" train --model "$model" --data "mnist:$out/A" --epochs "$base_epochs" --lr 0.001 --seed "$s" \
    "${common[@]}" --out "$d/base.safetensors" > "$d/base.log" 2>&1
  "$cnn" train --model "$model" --data "mnist:$out/B" --epochs "$epochs" --lr 0.001 --seed "$s" "${common[@]}" \
    --csv-log "$d/scratch.csv" --out "$d/scratch.safetensors" > "$d/scratch.log" 2>&1
  "$cnn" train --init-from "$d/base.safetensors" --replace-head 5 --data "mnist:$out/B" --epochs "$epochs" \
    --lr 0.001 --seed "$s" "${common[@]}" --csv-log "$d/tuned.csv" --out "$d/tuned.safetensors" > "$d/tuned.log" 2>&1
  "$cnn" train --init-from "$d/base.safetensors" --replace-head 5 --freeze flatten --data "mnist:$out/B" \
    --epochs "$epochs" --lr 0.001 --seed "$s" "${common[@]}" --csv-log "$d/frozen.csv" \
    --out "$d/frozen.safetensors" > "$d/frozen.log" 2>&1
  "$cnn" train --init-from "$d/frozen.safetensors" --data "mnist:$out/B" --epochs 5 --lr 0.0001 --seed "$s" \
    "${common[@]}" --csv-log "$d/unfrozen.csv" --out "$d/unfrozen.safetensors" > "$d/unfrozen.log" 2>&1
  row="| $s | $(read -r a l < <(acc "$d/base.log"); awk -v a="$a" 'BEGIN { printf "%.2f%%", 100 * a }')"
  for r in scratch tuned frozen unfrozen; do
    read -r a l < <(acc "$d/$r.log")
    row="$row | $(cell "$a" "$l" "$(first "$d/$r.csv")")"
  done
  echo "$row |"
done
