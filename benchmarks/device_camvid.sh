#!/usr/bin/env bash
# Copy the CamVid val split and the first 40 train frames into .device/camvid (about 12 MB), so
# that the lent GPU machine can run eval, train and the CamVid tests inside the 64 MiB carried.
set -euo pipefail
src=${1:-../shared/data/camvid}
dst=.device/camvid
rm -rf "$dst"; mkdir -p "$dst"/train "$dst"/trainannot
cp -r "$src"/val "$src"/valannot "$src"/README.md "$dst"/
for f in $(ls "$src"/train | head -40); do
    cp "$src/train/$f" "$dst/train/"; cp "$src/trainannot/${f%.*}.png" "$dst/trainannot/"
done
du -sh "$dst"
