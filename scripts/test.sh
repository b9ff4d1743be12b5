#!/usr/bin/env bash
# meshrpc's one test command: installs what the tests need when it is missing, then runs
# formatting, lints, docs, every test in the workspace, and builds the fuzz target.
# Usage: scripts/test.sh          (from anywhere; CI runs exactly this)
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }
started=$(date +%s)

step "toolchain"
command -v cargo >/dev/null || { echo "error: cargo not found: install Rust (https://rustup.rs) first" >&2; exit 1; }
cargo --version
for component in rustfmt clippy; do
    if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
        echo "installing the $component component"
        rustup component add "$component"
    fi
done
# System packages the tests use: protoc builds etcd-client (feature `etcd`), the etcd
# tests run a real etcd, the monitoring tests Prometheus and Chromium. Installed from
# Debian's packages when missing.
missing=()
command -v protoc >/dev/null 2>&1 || missing+=(protobuf-compiler)
command -v etcd >/dev/null 2>&1 || missing+=(etcd-server)
# The monitoring tests run a real Prometheus and drive the dashboard in headless Chromium.
command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
if ((${#missing[@]})); then
    step "installing ${missing[*]} (apt-get; one time)"
    sudo_cmd=()
    [[ $(id -u) -eq 0 ]] || sudo_cmd=(sudo)
    "${sudo_cmd[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
fi
command -v protoc >/dev/null 2>&1 || { echo "error: protoc is still missing (apt-get install protobuf-compiler)" >&2; exit 1; }
command -v etcd >/dev/null 2>&1 || { echo "error: etcd is still missing (apt-get install etcd-server)" >&2; exit 1; }
for tool in prometheus chromium chromedriver; do
    command -v "$tool" >/dev/null 2>&1 || { echo "error: $tool is still missing (apt-get install prometheus chromium chromium-driver)" >&2; exit 1; }
done

if ! command -v cargo-fuzz >/dev/null 2>&1; then
    step "installing cargo-fuzz (used to build the fuzz target; one time)"
    cargo install cargo-fuzz --locked --quiet
fi

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy (all targets, all features, warnings are errors)"
cargo clippy --workspace --all-targets --all-features --quiet -- -D warnings

step "cargo doc (broken links are errors)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --all-features --no-deps --quiet

step "cargo test (every test in the workspace)"
cargo test --workspace --all-features

step "examples (each must exit by itself, successfully, saying what it promises)"
run_example() {
    local name=$1 expect=$2 out
    out=$(timeout 120 cargo run --quiet -p meshrpc --example "$name" 2>&1) || {
        printf '%s\nexample %s failed\n' "$out" "$name" >&2
        exit 1
    }
    grep -qF -- "$expect" <<<"$out" || {
        printf '%s\nexample %s did not print: %s\n' "$out" "$name" "$expect" >&2
        exit 1
    }
    echo "example $name: ok"
}
run_example calculator "Result: 15"
run_example safe_counter "Final counter value: 1000"
run_example concurrent_calls "All RPC calls completed."
run_example fanout_rpc "All RPC calls completed."
for f in meshrpc/examples/*.rs; do
    case "$(basename "$f" .rs)" in
        calculator|safe_counter|concurrent_calls|fanout_rpc) ;;
        *) echo "error: $f is not run by scripts/test.sh: add it to the list above" >&2; exit 1 ;;
    esac
done

step "fuzz target builds (cargo fuzz, stable, no sanitizer)"
(cd meshrpc && cargo fuzz build -s none --dev frame_decoder)

printf '\nall checks passed in %ss\n' "$(( $(date +%s) - started ))"
