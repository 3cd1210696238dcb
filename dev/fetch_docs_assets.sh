#!/usr/bin/env bash
# Re-fetches the Swagger UI and ReDoc files that /docs and /redoc serve (api/static/)
# from the npm registry, with their licences, and rewrites api/static/SOURCES.md and
# api/static/SHA256SUMS. Run by hand (`make docs-assets`), never by tests or CI; then
# review the diff and run tests/api/test_docs.py and tests/integration/test_docs_offline.py.
#
#   dev/fetch_docs_assets.sh [SWAGGER_UI_VERSION] [REDOC_VERSION]
set -euo pipefail

SWAGGER_UI_VERSION=${1:-5.35.0}
# ReDoc 2.x: from 3.0 the standalone bundle is an ES module (twice the size) that
# FastAPI's get_redoc_html, which loads a classic <script>, cannot start.
REDOC_VERSION=${2:-2.5.4}

ROOT=$(cd "$(dirname "$0")/.." && pwd)
STATIC=$ROOT/api/static
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

fetch() { # package version -> unpacked into $WORK/package-name
    local dir=$WORK/$1
    mkdir -p "$dir"
    (cd "$WORK" && npm pack --silent "$1@$2" >/dev/null)
    tar -xzf "$WORK/$1-$2.tgz" -C "$dir" --strip-components=1
    sha256sum "$WORK/$1-$2.tgz" | cut -d' ' -f1
}

copy() { # package destination-folder files...
    local package=$1 dest=$STATIC/$2
    shift 2
    rm -rf "$dest"
    mkdir -p "$dest"
    for file in "$@"; do
        cp "$WORK/$package/$file" "$dest/$(basename "$file")"
    done
}

swagger_sha=$(fetch swagger-ui-dist "$SWAGGER_UI_VERSION")
redoc_sha=$(fetch redoc "$REDOC_VERSION")
copy swagger-ui-dist swagger-ui swagger-ui-bundle.js swagger-ui-bundle.js.LICENSE.txt \
    swagger-ui.css favicon-32x32.png LICENSE NOTICE
copy redoc redoc bundles/redoc.standalone.js bundles/redoc.standalone.js.LICENSE.txt LICENSE

cat >"$STATIC/SOURCES.md" <<EOF
# Where these files come from

Served by api/docs.py at /static/... for the /docs (Swagger UI) and /redoc (ReDoc)
pages, so both work without internet. Copied unchanged from the npm registry's
packages by dev/fetch_docs_assets.sh (\`make docs-assets\`); SHA256SUMS lists every file.

| folder | npm package | licence | sha256 of the package tarball |
|---|---|---|---|
| swagger-ui/ | swagger-ui-dist@$SWAGGER_UI_VERSION | Apache-2.0 (LICENSE, NOTICE) | $swagger_sha |
| redoc/ | redoc@$REDOC_VERSION | MIT (LICENSE) | $redoc_sha |

The bundled third-party notices are in each bundle's \`.LICENSE.txt\`.
EOF

(cd "$STATIC" && find swagger-ui redoc -type f | sort | xargs sha256sum >SHA256SUMS)
echo "api/static: swagger-ui-dist@$SWAGGER_UI_VERSION, redoc@$REDOC_VERSION"
