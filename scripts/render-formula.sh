#!/usr/bin/env bash
# Print packaging/homebrew/heyvm.rb for a release: the tag and the commit
# it names filled in. The release workflow writes the result to the tap
# (github.com/heyvm/homebrew-tap, Formula/heyvm.rb).
# Usage: scripts/render-formula.sh v1.2.3 <40-hex commit>
set -euo pipefail
tag=${1:?usage: render-formula.sh TAG COMMIT}
commit=${2:?usage: render-formula.sh TAG COMMIT}
[[ $tag =~ ^v[0-9]+\.[0-9]+\.[0-9]+([-.+][0-9A-Za-z.+-]*)?$ ]] || { echo "render-formula: $tag is not a v-prefixed version" >&2; exit 1; }
[[ $commit =~ ^[0-9a-f]{40}$ ]] || { echo "render-formula: $commit is not a full commit id" >&2; exit 1; }
cd "$(dirname "$0")/.."
sed -e "s|^      tag:      \".*\",\$|      tag:      \"$tag\",|" \
	-e "s|^      revision: \".*\"\$|      revision: \"$commit\"|" packaging/homebrew/heyvm.rb
