#!/usr/bin/env bash
# Fetch OHIF's built viewer for the viewer test: the npm registry's @ohif/app ships the production
# build in dist/. It goes into a cache outside the repository (never committed) and is fetched once;
# prints the dist folder. npm checks the tarball against the registry's integrity hash.
#   OHIF_VERSION        which release (default 3.13.2, the one the test was written against)
#   TRIPHASE_OHIF_DIR   cache folder (default ~/.cache/triphase/ohif)
set -euo pipefail
VERSION=${OHIF_VERSION:-3.13.2}
CACHE=${TRIPHASE_OHIF_DIR:-$HOME/.cache/triphase/ohif}
TARGET="$CACHE/$VERSION"
if [ -f "$TARGET/dist/index.html" ]; then
  echo "$TARGET/dist"
  exit 0
fi
command -v npm >/dev/null 2>&1 || { echo "fetch_ohif: npm is needed (apt-get install npm)" >&2; exit 1; }
mkdir -p "$CACHE"
WORK=$(mktemp -d "$CACHE/.fetch.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
echo "fetch_ohif: fetching @ohif/app@$VERSION" >&2
(cd "$WORK" && npm pack --silent --cache "$WORK/npm-cache" "@ohif/app@$VERSION" >/dev/null \
  && tar -xzf "ohif-app-$VERSION.tgz")
[ -f "$WORK/package/dist/index.html" ] || { echo "fetch_ohif: no dist/index.html in the package" >&2; exit 1; }
rm -rf "$TARGET"
mv "$WORK/package" "$TARGET"
echo "$TARGET/dist"
