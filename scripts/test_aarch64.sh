#!/usr/bin/env bash
# The library crates' tests on a CPU that is not x86: cross-built for
# aarch64 (an ARM server, a Raspberry Pi, Linux on Apple silicon) and run
# under qemu-user, so the portable code paths, the only ones such a CPU
# takes, are tested there, and the whole workspace, the `attn` binary
# included, is known to build for it, and the binary trains and samples.
# attn-cli's and attn-serve's tests are left out: they start the `attn`
# binary and a browser as processes, which under qemu-user needs the
# kernel's binfmt_misc (not every machine has it).
#
# Needs rustup; installs the aarch64 standard library, and Debian's
# gcc-aarch64-linux-gnu (the linker) and qemu-user, when missing.
#   scripts/test_aarch64.sh [cargo test args...]
set -euo pipefail
cd "$(dirname "$0")/.."
target=aarch64-unknown-linux-gnu
if ! command -v rustup >/dev/null; then
  echo "NOT TESTED: aarch64 (rustup is missing, so its standard library cannot be added)"
  exit 0
fi
rustup target list --installed | grep -qx "$target" || rustup target add "$target"
if ! command -v qemu-aarch64 >/dev/null || ! command -v aarch64-linux-gnu-gcc >/dev/null; then
  sudo=$(command -v sudo || true)
  $sudo apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q gcc-aarch64-linux-gnu qemu-user >/dev/null
fi
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu"
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
cargo build --release -q --target "$target" -p attn-cli
# Two shard tests are left out: under qemu-user every floating-point
# multiply-add is emulated in software, and they alone took 65 of the
# run's 213 seconds (their subject, how a batch is split, is the same on
# every CPU; the bit-for-bit thread-count test stays).
skipped=(shards_match_the_whole_batch accumulated_micro_batches_add_up)
# attn-same-features is left out too: it only asks for the features that
# attn-serve's dev-dependencies use, which this build does not build.
cargo test --release --target "$target" --workspace --exclude attn-cli --exclude attn-serve --exclude attn-same-features "$@" -- "${skipped[@]/#/--skip=}"
echo "NOT RUN under qemu-user (run natively on x86 by scripts/test.sh): ${skipped[*]}"
# The binary itself, end to end: two training steps on a slice of the
# corpus (a checkpoint written and read back), then a sample from it.
scripts/fetch_shakespeare.sh >/dev/null
smoke=$(mktemp -d)
trap 'rm -rf "$smoke"' EXIT
head -c 100000 .cache/data/shakespeare.txt > "$smoke/corpus.txt"
attn="qemu-aarch64 -L /usr/aarch64-linux-gnu ${CARGO_TARGET_DIR:-target}/$target/release/attn"
$attn train --data "$smoke/corpus.txt" --preset baby --steps 2 --batch-size 2 --seq-len 32 --eval-every 2 --eval-batches 1 \
  --out "$smoke/run" --quiet | grep -q '"step":2'
$attn generate --model "$smoke/run" --prompt "ROMEO:" --max-new-tokens 8 --seed 1 | grep -q "ROMEO:"
echo "aarch64 (under qemu-user): the libraries' tests passed, on the portable code paths; attn built, trained 2 steps and sampled"
