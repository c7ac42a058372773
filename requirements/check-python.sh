#!/usr/bin/env bash
# Is this Python one gitml supports? make runs it before it creates .venv, and before it installs
# into an existing one; requirements/update-lock.sh runs it too. The range is read from
# requires-python in pyproject.toml, so it lives in one place.
#   requirements/check-python.sh PYTHON          the interpreter .venv would be made with
#   requirements/check-python.sh --venv PYTHON   the interpreter of an existing .venv
# Silent, exit 0, when it fits; otherwise one message naming the versions that work, exit 1.
# Plain bash (no packaging, no tomllib): it must run before any virtualenv, with any Python or none.
set -euo pipefail

venv=
if [[ ${1:-} == --venv ]]; then
  venv=1
  shift
fi
python=${1:?usage: check-python.sh [--venv] PYTHON}
pyproject="$(dirname "$0")/../pyproject.toml"
spec=$(sed -nE 's/^requires-python *= *"([^"]*)".*/\1/p' "$pyproject")
[[ -n $spec ]] || { echo "check-python.sh: no requires-python in $pyproject" >&2; exit 2; }

# 3.11 -> 3 11 0; 3.13.0rc1 -> 3 13 0 (a pre-release counts as its release).
parts() {
  local a b c
  IFS=. read -r a b c _ <<< "$1"
  a=${a%%[!0-9]*} b=${b%%[!0-9]*} c=${c%%[!0-9]*}
  echo "$((10#${a:-0})) $((10#${b:-0})) $((10#${c:-0}))"
}
# vercmp A B: prints -1, 0 or 1.
vercmp() {
  local -a x y
  read -ra x <<< "$(parts "$1")"
  read -ra y <<< "$(parts "$2")"
  for i in 0 1 2; do
    if ((x[i] < y[i])); then echo -1; return; fi
    if ((x[i] > y[i])); then echo 1; return; fi
  done
  echo 0
}
# matches VERSION CLAUSE: one clause of a PEP 440 specifier (>=, >, <=, <, ==, !=, ~=, and .* after == and !=).
matches() {
  local v=$1 clause=${2// /} op want c
  op=${clause%%[0-9]*}
  want=${clause#"$op"}
  if [[ $want == *.\* ]]; then
    want=${want%.\*}
    [[ "$v." == "$want."* ]] && c=0 || c=1
    case $op in
      ==) [[ $c == 0 ]]; return ;;
      !=) [[ $c != 0 ]]; return ;;
    esac
  fi
  c=$(vercmp "$v" "$want")
  case $op in
    '>=') [[ $c != -1 ]] ;;
    '>') [[ $c == 1 ]] ;;
    '<=') [[ $c != 1 ]] ;;
    '<') [[ $c == -1 ]] ;;
    '==' | '===') [[ $c == 0 ]] ;;
    '!=') [[ $c != 0 ]] ;;
    '~=') [[ $c != -1 && "$v." == "${want%.*}."* ]] ;;
    *) echo "check-python.sh: cannot read requires-python clause '$clause'" >&2; exit 2 ;;
  esac
}

# The versions that work, in words: ">=3.11,<3.12" -> "Python 3.11.0 to 3.11.x".
low='' high='' series=''
IFS=, read -ra clauses <<< "$spec"
for clause in "${clauses[@]}"; do
  clause=${clause// /}
  case $clause in
    '>='*) read -r a b c <<< "$(parts "${clause#>=}")"; low="$a.$b.$c" series="python$a.$b" ;;
    '<'[0-9]*) read -r a b c <<< "$(parts "${clause#<}")"; ((c > 0 || b == 0)) || high="$a.$((b - 1)).x" ;;
  esac
done
if [[ -n $low && -n $high && ${#clauses[@]} == 2 ]]; then
  works="Python $low to $high (requires-python \"$spec\" in pyproject.toml)"
else
  works="Python $spec (requires-python in pyproject.toml)"
fi
suggest=${series:-python3}

if ! path=$(command -v "$python"); then
  echo "gitml needs $works; there is no '$python' here. Install one and run make with it, e.g. \`make PYTHON=$suggest run\`." >&2
  exit 1
fi
said=$("$python" --version 2>&1) || true
version=$(sed -nE 's/^Python ([0-9]+\.[0-9]+\.[0-9]+[^ ]*).*/\1/p' <<< "$said")
if [[ -z $version ]]; then
  echo "gitml needs $works; \`$python --version\` ($path) did not say which Python it is: ${said%%$'\n'*}" >&2
  exit 1
fi
for clause in "${clauses[@]}"; do
  if ! matches "$version" "$clause"; then
    if [[ -n $venv ]]; then
      echo "gitml needs $works; .venv was made by Python $version ($path). Remove it (\`rm -rf .venv\`) and run make again, with \`PYTHON=$suggest\` if your python3 is not one of those." >&2
    else
      echo "gitml needs $works; found Python $version at $path. Run make with one of those, e.g. \`make PYTHON=$suggest run\`." >&2
    fi
    exit 1
  fi
done
