# Sourced by bench/stress.sh and bench/matrix.sh: what qshm left in a private namespace.
# left_in_namespace LABEL DIR: prints the System V segments and semaphore sets, and the
# files in /dev/shm and DIR (the namespace's TMPDIR), left; status 0 only if none.
left_in_namespace() {
    local label=$1 dir=$2 shm sem files
    shm=$(ipcs -m | grep -c '^0x' || true)
    sem=$(ipcs -s | grep -c '^0x' || true)
    files=$(find /dev/shm "$dir" -mindepth 1 | wc -l)
    echo "$label: $shm System V segments, $sem semaphore sets, $files files in /dev/shm and TMPDIR"
    find /dev/shm "$dir" -mindepth 1 | head -5
    [ "$shm" = 0 ] && [ "$sem" = 0 ] && [ "$files" = 0 ]
}
