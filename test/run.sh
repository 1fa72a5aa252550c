#!/bin/sh
# The whole suite (`npm test`): contract checks, type check, ava (TypeScript), pytest (engine worker).
# Ends with one line "N passed, N failed, N skipped", counting each check and each test; a test
# that cannot run here (no GPU, no grpcurl, no C compiler) is skipped and counted as skipped.
# CI reads the "N passed, N failed" at its start.
set -u
cd "$(dirname "$0")/.."
passed=0
failed=0
skipped=0
log=$(mktemp -d)

check() {  # check NAME COMMAND...: one pass or fail
  name=$1
  shift
  if "$@" >"$log/out" 2>&1; then
    passed=$((passed + 1))
    echo "ok - $name"
  else
    failed=$((failed + 1))
    echo "not ok - $name"
    sed 's/^/    /' "$log/out"
  fi
}

generated_is_fresh() {  # regenerate into a scratch folder and compare with what is committed
  npx buf generate -o "$log/gen" && diff -r "$log/gen/src/gen" src/gen && diff -r "$log/gen/python/gen" python/gen &&
    sh src/shared/reflection/generate.sh "$log/reflection" && diff -r "$log/reflection" src/shared/reflection/gen
}

check "buf lint" npx buf lint
check "generated code is fresh (npm run generate, src/shared/reflection/generate.sh)" generated_is_fresh
check "tsc --noEmit (strict)" npx tsc --noEmit

# ava: TAP summary lines "# pass N" / "# skip N" (absent when none) / "# fail N"
npx ava --tap >"$log/ava.tap" 2>&1
cat "$log/ava.tap"
ava_pass=$(sed -n 's/^# pass \([0-9]*\)$/\1/p' "$log/ava.tap" | tail -1)
ava_fail=$(sed -n 's/^# fail \([0-9]*\)$/\1/p' "$log/ava.tap" | tail -1)
ava_skip=$(sed -n 's/^# skip \([0-9]*\)$/\1/p' "$log/ava.tap" | tail -1)
if [ -z "$ava_pass" ]; then  # ava crashed before its summary
  ava_pass=0
  ava_fail=${ava_fail:-1}
fi
passed=$((passed + ava_pass))
failed=$((failed + ${ava_fail:-0}))
skipped=$((skipped + ${ava_skip:-0}))

# pytest: count from its junit report
if [ -d python/tests ]; then
  (cd python && ../.venv/bin/python -m pytest -q -p no:cacheprovider --junitxml="$log/pytest.xml" tests)
  counts=$(.venv/bin/python - "$log/pytest.xml" <<'PY'
import sys, xml.etree.ElementTree as ET
try:
    root = ET.parse(sys.argv[1]).getroot()
except Exception:
    print("0 1 0"); raise SystemExit
suites = [root] if root.tag == "testsuite" else list(root)
total = sum(int(s.get("tests", 0)) for s in suites)
bad = sum(int(s.get("failures", 0)) + int(s.get("errors", 0)) for s in suites)
skipped = sum(int(s.get("skipped", 0)) for s in suites)
print(total - bad - skipped, bad, skipped)
PY
)
  set -- $counts
  passed=$((passed + $1))
  failed=$((failed + $2))
  skipped=$((skipped + $3))
fi

rm -rf "$log"
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
