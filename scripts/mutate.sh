#!/usr/bin/env bash
# make mutate: mutmut 3 over the modules that guard users, each scoped to its fast unit tests.
#
#   scripts/mutate.sh                    every module below, on the work tree
#   scripts/mutate.sh gradserve/rpc/auth.py ...   only these modules
#   MUTATE_REF=main scripts/mutate.sh    the tests (and code) of a git ref: a "before" score
#
# mutmut names a mutant after its file's path and puts only mutants/ (or mutants/src) on
# sys.path, so the service/ and client/ layout is staged flat into build/mutation/
# (gradserve/, gradserve_client/, tests/, pyproject.toml) and mutmut runs there. Every
# mutant runs only the selected tests that reach its function. The score of each module is
# printed at the end, and build/mutation/results.txt lists every mutant's status.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
STAGE="${MUTATE_STAGE:-$ROOT/build/mutation}"
MUTMUT="${MUTMUT:-$ROOT/.venv/bin/mutmut}"

# One line per module: its file in the stage, the mutants scored (a glob of mutmut's names),
# and its fast unit tests.
MODULES=(
    "gradserve_client/expr.py gradserve_client.expr.* tests/unit/test_expr.py"
    "gradserve/rpc/auth.py gradserve.rpc.auth.* tests/unit/test_auth.py"
    "gradserve/rpc/requests.py gradserve.rpc.requests.x_cancel_callback* tests/unit/test_cancel.py"
    "gradserve/training/loop.py gradserve.training.loop.* tests/unit/training"
    "gradserve/rpc/codec.py gradserve.rpc.codec.* tests/unit/test_rpc_codec.py
     tests/unit/test_validation_cancel.py tests/unit/test_call_sites.py"
    "gradserve_client/proto/tensor_codec.py gradserve_client.proto.tensor_codec.*
     tests/unit/test_tensor_codec.py tests/unit/test_rpc_wire.py"
)

if [ $# -gt 0 ]; then
    chosen=()
    for m in "${MODULES[@]}"; do
        read -r module _ <<<"$m"
        for want in "$@"; do
            if [ "$module" = "$want" ]; then chosen+=("$m"); fi
        done
    done
    MODULES=("${chosen[@]}")
fi

rm -rf "$STAGE"
mkdir -p "$STAGE"
if [ -n "${MUTATE_REF:-}" ]; then
    git archive "$MUTATE_REF" service/gradserve client/gradserve_client tests pyproject.toml \
        | tar -x -C "$STAGE"
else
    mkdir -p "$STAGE/service" "$STAGE/client"
    cp -r service/gradserve "$STAGE/service/"
    cp -r client/gradserve_client "$STAGE/client/"
    cp -r tests pyproject.toml "$STAGE/"
fi
mv "$STAGE/service/gradserve" "$STAGE/client/gradserve_client" "$STAGE/"
rmdir "$STAGE/service" "$STAGE/client"
find "$STAGE" -name __pycache__ -prune -exec rm -rf {} +

{
    echo "[mutmut]"
    echo "source_paths ="
    echo "    gradserve"
    echo "    gradserve_client"
    echo "only_mutate ="
    for m in "${MODULES[@]}"; do
        read -r module _ <<<"$m"
        echo "    $module"
    done
    echo "pytest_add_cli_args_test_selection ="
    for m in "${MODULES[@]}"; do
        read -r -d '' _ _ tests <<<"$m" || true
        for t in $tests; do
            if [ -e "$STAGE/$t" ]; then echo "    $t"; fi
        done
    done
    echo "pytest_add_cli_args ="
    echo "    -p"
    echo "    no:cacheprovider"
    echo "    -q"
} >"$STAGE/setup.cfg"
# mutmut reads [tool.mutmut] from pyproject.toml first; the stage's has none.

cd "$STAGE"
globs=()
for m in "${MODULES[@]}"; do
    read -r _ glob _ <<<"$m"
    globs+=("$glob")
done
"$MUTMUT" run --max-children "${MUTATE_JOBS:-2}" "${globs[@]}" || true
"$MUTMUT" results --all true >results.txt 2>&1 || true
"$ROOT/.venv/bin/python" - "${MODULES[@]}" <<'PY'
import collections
import fnmatch
import sys

modules = [m.split()[:2] for m in sys.argv[1:]]
counts = {path: collections.Counter() for path, _ in modules}
for line in open("results.txt"):
    name, _, status = line.strip().rpartition(": ")
    for path, glob in modules:
        if fnmatch.fnmatch(name, glob):
            counts[path][status] += 1
print(f"{'module':40} {'killed':>7} {'survived':>9} {'no tests':>9} {'other':>6} {'score':>6}")
for path, c in counts.items():
    killed = c["killed"] + c["timeout"]
    survived, untested = c["survived"], c["no tests"]
    other = sum(c.values()) - killed - survived - untested
    total = killed + survived + untested
    score = f"{100 * killed / total:.0f}%" if total else "-"
    print(f"{path:40} {killed:7} {survived:9} {untested:9} {other:6} {score:>6}")
PY
