#!/usr/bin/env bash
# Compiles a small consumer program against the packed tarball, as a user of the package gets it:
# `npm pack` (of the current dist/: run `npm run build` first), unpack into a scratch project's
# node_modules/shardledger, and `tsc` with skipLibCheck: false, so every .d.ts the entry point
# reaches is checked (an @internal name that stripInternal removed but a public declaration still
# references fails here, not for the user). The package's own dependencies come from the
# repository's node_modules (a symlink each), so the check runs offline.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# --ignore-scripts: `prepare` would build again; the caller has just built.
tarball="$(cd "$repo" && npm pack --silent --ignore-scripts --pack-destination "$work" | tail -n 1)"
mkdir -p "$work/consumer/node_modules/shardledger"
tar -xzf "$work/$tarball" -C "$work/consumer/node_modules/shardledger" --strip-components=1
for dep in "$repo"/node_modules/* "$repo"/node_modules/@*/*; do
  name="${dep#"$repo"/node_modules/}"
  [ "$name" = shardledger ] && continue
  [ -e "$work/consumer/node_modules/$name" ] && continue
  mkdir -p "$(dirname "$work/consumer/node_modules/$name")"
  ln -s "$dep" "$work/consumer/node_modules/$name"
done

cp "$repo/scripts/consumer/consumer.ts" "$work/consumer/consumer.ts"
cat > "$work/consumer/package.json" <<'JSON'
{ "name": "consumer", "private": true, "type": "module" }
JSON
cat > "$work/consumer/tsconfig.json" <<'JSON'
{
  "compilerOptions": {
    "target": "ES2022",
    "lib": ["ES2023"],
    "module": "NodeNext",
    "moduleResolution": "NodeNext",
    "strict": true,
    "skipLibCheck": false,
    "noEmit": true,
    "types": ["node"]
  },
  "files": ["consumer.ts"]
}
JSON
cd "$work/consumer"
"$repo/node_modules/.bin/tsc" -p tsconfig.json
echo "consumer: compiles against $tarball"
