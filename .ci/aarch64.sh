#!/usr/bin/env bash
# aarch64 for real: cross-builds the C runtime and its test runner with gcc-aarch64-linux-gnu and
# runs the C tests (kernels of every level the emulated CPU supports against the scalar reference,
# loader, ops) under qemu-aarch64-static. Installs nothing: .ci/run installs gcc-aarch64-linux-gnu,
# qemu-user-static and libc6-dev-arm64-cross. Prints the runner's "N passed, M failed" line and
# exits non-zero when the build or any test fails.
#
# qemu's default CPU model ("max") reports ASIMD and ASIMDDP in AT_HWCAP, so both the neon and the
# neondot levels are detected and swept under emulation; the script prints what the emulated CPU
# reports before the tests, so a qemu that lacks one says so in the log.
#
# Overrides: BUILD (default build-aarch64, relative to cruntime/), CROSS_CC, QEMU, SYSROOT, JOBS.
set -euo pipefail
cd "$(dirname "$0")/.."

BUILD=${BUILD:-build-aarch64}
CROSS_CC=${CROSS_CC:-aarch64-linux-gnu-gcc}
QEMU=${QEMU:-qemu-aarch64-static}
SYSROOT=${SYSROOT:-/usr/aarch64-linux-gnu}
JOBS=${JOBS:-2}
case "$BUILD" in
  /*) build_dir=$BUILD ;;
  *) build_dir=cruntime/$BUILD ;;
esac

for tool in "$CROSS_CC" "$QEMU" python3 make; do
  command -v "$tool" >/dev/null || { echo "aarch64.sh: $tool not found (apt-get install gcc-aarch64-linux-gnu qemu-user-static libc6-dev-arm64-cross)" >&2; exit 1; }
done
"$CROSS_CC" --version | head -n 1
"$QEMU" --version | head -n 1

make -C cruntime -j"$JOBS" CC="$CROSS_CC" BUILD="$BUILD" all

# What the emulated CPU advertises: the runtime picks its level from the same AT_HWCAP bits.
hwcap_probe=$build_dir/hwcap_probe
cat > "$hwcap_probe.c" <<'EOF'
#include <asm/hwcap.h>
#include <stdio.h>
#include <sys/auxv.h>
int main(void) {
  const unsigned long hwcap = getauxval(AT_HWCAP);
  printf("emulated CPU: AT_HWCAP=0x%lx asimd=%s asimddp=%s\n", hwcap, (hwcap & HWCAP_ASIMD) ? "yes" : "no",
         (hwcap & HWCAP_ASIMDDP) ? "yes" : "no");
  return 0;
}
EOF
"$CROSS_CC" -O1 -o "$hwcap_probe" "$hwcap_probe.c"
"$QEMU" -L "$SYSROOT" "$hwcap_probe"

rm -rf "$build_dir/seeds"
python3 tests/c/make_seed_models.py "$build_dir/seeds"

log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
"$QEMU" -L "$SYSROOT" "$build_dir/edge_tests" "$build_dir/seeds" 2>&1 | tee "$log" || status=$?
summary=$(grep -E '[0-9]+ passed, [0-9]+ failed' "$log" | tail -n 1 || true)
if [ -z "$summary" ]; then
  echo "aarch64: the test runner printed no 'N passed, M failed' line (exit status $status)" >&2
  exit 1
fi
echo "aarch64 (qemu): $summary"
if [ "$status" -ne 0 ] || ! grep -qE '(^|[^0-9])0 failed' <<<"$summary"; then
  echo "aarch64: tests failed (exit status $status)" >&2
  exit 1
fi
