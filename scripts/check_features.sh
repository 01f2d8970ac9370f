#!/usr/bin/env bash
# Fails when a dependency that both the `attn` binary and the workspace's
# tests use is built with different features in the two (see
# crates/same-features/Cargo.toml): cargo would then compile it, and every
# crate above it, twice. Prints each such dependency and both feature lists.
set -euo pipefail
cd "$(dirname "$0")/.."
list() { cargo tree "$@" --quiet --prefix none -f '{p} [{f}]' | sed -E 's/ \([^)]*\)//g' | sort -u; }
join -t $'\t' <(list -p attn-cli -e no-dev | sed 's/ \[/\t[/') <(list --workspace | sed 's/ \[/\t[/') |
  awk -F'\t' '$2 != $3 { print "  " $1 ": the binary " $2 ", the tests " $3; bad = 1 } END { exit bad }' || {
  echo "check_features: the dependencies above differ in features between 'cargo build --bin attn' and 'cargo test --workspace';" >&2
  echo "add the tests' features to crates/same-features/Cargo.toml" >&2
  exit 1
}
echo "check_features: the binary and the tests resolve every shared dependency with the same features"
