#!/usr/bin/env bash
# Sets up moe-ts on a fresh Debian machine with Node 20: the system packages the native backend
# builds against, then npm ci (which compiles the addon and the TypeScript).
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

# compilers, OpenBLAS and oneDNN (the GEMM libraries; the build finds each by itself) for the
# native addon; Fashion-MNIST (the real data of the training examples and tests); DejaVu fonts so
# that plots rendered to PNG have text; chromium for the dashboard's browser test (puppeteer-core
# drives it and downloads no browser)
PACKAGES=(g++ make python3 libopenblas-dev libdnnl-dev dataset-fashion-mnist fonts-dejavu-core chromium)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

npm ci --no-audit --no-fund
