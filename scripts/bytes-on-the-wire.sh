#!/usr/bin/env bash
# Bytes on the wire for the playground, the dashboard (first visit, then a second one that
# revalidates with If-None-Match) and a page of 100 stock levels (plain, gzip, brotli), with a
# browser's Accept and Accept-Encoding. Needs curl and jq.
#
#   scripts/bytes-on-the-wire.sh target/release/stockroom 18101
set -euo pipefail
bin=$1; port=$2; db=/tmp/wire-$port.db; rm -f $db*
STOCKROOM_API_KEYS="admin:wire-admin-key-1" $bin serve --listen 127.0.0.1:$port --database-url "sqlite://$db?mode=rwc" >/tmp/wire-$port.log 2>&1 &
pid=$!; sleep 2
base=http://127.0.0.1:$port
# seed 100 levels
m='mutation { createStore(input: {id: "s1", name: "Store"}) { id } }'
curl -s -H 'authorization: Bearer wire-admin-key-1' -H 'content-type: application/json' -d "$(jq -nc --arg q "$m" '{query:$q}')" $base/graphql >/dev/null
for i in $(seq 1 100); do
  m="mutation { p: createProduct(input: {sku: \"W-$i\", name: \"Wire product $i\"}) { id } }"
  id=$(curl -s -H 'authorization: Bearer wire-admin-key-1' -H 'content-type: application/json' -d "$(jq -nc --arg q "$m" '{query:$q}')" $base/graphql | jq -r .data.p.id)
  m="mutation { initializeStock(input: {productId: \"$id\", storeId: \"s1\", quantity: 10}) { version } }"
  curl -s -H 'authorization: Bearer wire-admin-key-1' -H 'content-type: application/json' -d "$(jq -nc --arg q "$m" '{query:$q}')" $base/graphql >/dev/null
done
# The first request for a file after a start goes out uncompressed and starts its compression:
# ask once, give the compressor time, then measure what every later visitor gets.
for path in / /playground/assets/index.js /playground/assets/index.css /dashboard /playground/dashboard.js /playground/dashboard.css; do
  curl -s -o /dev/null -H 'accept: text/html,*/*' -H 'accept-encoding: gzip, deflate, br' $base$path
done
sleep 3
visit() { # page, assets...; prints total bytes (headers + body) first and second visit
  local first=0 second=0
  for path in "$@"; do
    read size etag < <(curl -s -o /dev/null -D /tmp/h -H 'accept: text/html,*/*' -H 'accept-encoding: gzip, deflate, br' -w '%{size_download} %{size_header}\n' $base$path)
    hdr=$(echo $size | cut -d' ' -f2); body=$(echo $size | cut -d' ' -f1)
    tag=$(grep -i '^etag:' /tmp/h | cut -d' ' -f2 | tr -d '\r')
    h1=$(curl -s -o /dev/null -H 'accept: text/html,*/*' -H 'accept-encoding: gzip, deflate, br' -w '%{size_download} %{size_header}' $base$path)
    first=$((first + ${h1% *} + ${h1#* }))
    if [ -n "$tag" ]; then
      h2=$(curl -s -o /dev/null -H 'accept: text/html,*/*' -H 'accept-encoding: gzip, deflate, br' -H "if-none-match: $tag" -w '%{size_download} %{size_header}' $base$path)
    else
      h2=$h1
    fi
    second=$((second + ${h2% *} + ${h2#* }))
  done
  echo "$1: first visit $first bytes, second visit $second bytes"
}
visit / /playground/assets/index.js /playground/assets/index.css
visit /dashboard /playground/dashboard.js /playground/dashboard.css
q='{ stockLevels(first: 100) { edges { node { quantity reserved available product { sku name } store { name } } } } }'
plain=$(curl -s -o /dev/null -H 'authorization: Bearer wire-admin-key-1' -H 'content-type: application/json' -d "$(jq -nc --arg q "$q" '{query:$q}')" -w '%{size_download}' $base/graphql)
gz=$(curl -s -o /dev/null -H 'accept-encoding: gzip' -H 'authorization: Bearer wire-admin-key-1' -H 'content-type: application/json' -d "$(jq -nc --arg q "$q" '{query:$q}')" -w '%{size_download}' $base/graphql)
br=$(curl -s -o /dev/null -H 'accept-encoding: br' -H 'authorization: Bearer wire-admin-key-1' -H 'content-type: application/json' -d "$(jq -nc --arg q "$q" '{query:$q}')" -w '%{size_download}' $base/graphql)
echo "page of 100 levels: plain $plain bytes, gzip $gz, br $br"
kill $pid
