#!/bin/sh
# checksrc.sh - reject unsafe C library calls in our sources (after curl's
# checksrc). Usage: scripts/checksrc.sh [SOURCE_DIR]. Exits 1 listing offenders.
dir=${1:-.}
banned='strcpy|strcat|sprintf|vsprintf|strtok|atoi|atol|atoll|atof|gets|strncpy|tmpnam|mktemp'
out=$(grep -rnE "(^|[^_a-zA-Z0-9])($banned)[[:space:]]*\(" "$dir/src" "$dir/tests" "$dir/bench" \
      --include='*.c' --include='*.h' 2>/dev/null)
if [ -n "$out" ]; then
    echo "checksrc: banned functions (use snprintf, strtoll with checks, memcpy with sizes):"
    echo "$out"
    exit 1
fi
echo "checksrc: ok"
