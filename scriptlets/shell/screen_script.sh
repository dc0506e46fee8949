#!/usr/bin/env bash
# screen_script.sh: manage GNU screen sessions by exact name.
#
# Sessions are targeted as PID.NAME, resolved from `screen -ls` (screen itself matches name
# prefixes: `-S web` could hit `web-frontend`), and text is typed through a private file and
# `readbuf` + `paste` (`stuff` would expand $VAR, ^X and backslashes), so it arrives byte for byte.
# Honours $SCREENDIR. Exit codes: 0 done, 1 failed (no such session, screen missing), 2 usage.

set -euo pipefail

readonly NAME_RE='^[A-Za-z0-9_][A-Za-z0-9_-]{0,63}$'
readonly READY_TRIES=100 # x 0.05 s: how long to wait for a new session's shell
PROG=${0##*/}
readonly PROG

usage() {
    cat <<EOF
Usage: $PROG OPTION [NAME [COMMAND]]

Manage GNU screen sessions by exact name (NAME must match $NAME_RE).

  -l              list sessions: NAME, PID, STATE (tab-separated)
  -c NAME         create a detached session, ready for commands
  -k NAME         kill the session
  -d NAME         detach the session from the terminal attached to it
  -s NAME COMMAND type COMMAND into the session (byte for byte) and press Enter
  -r NAME         recreate the session (kill it if it exists) with logging to
                  \${SCREEN_LOG_DIR:-./logs}/NAME.log, flushed at once
  -h              show this help

Attach with: screen -r PID.NAME (as listed by -l); detach again with Ctrl-a d.
EOF
}

die() { # die CODE MESSAGE
    printf '%s: %s\n' "$PROG" "$2" >&2
    exit "$1"
}

require_screen() {
    command -v screen >/dev/null 2>&1 || die 1 "GNU screen is not installed (apt-get install screen)"
}

check_name() {
    [[ -n ${1:-} ]] || die 2 "missing session name (see -h)"
    [[ $1 =~ $NAME_RE ]] || die 2 "invalid session name '$1': must match $NAME_RE"
}

# True when pid $1 is a running screen (a "Dead ???" socket of a live server is just busy).
screen_alive() {
    local comm
    comm=$(cat "/proc/$1/comm" 2>/dev/null) || return 1
    [[ $comm == *screen* ]]
}

# Print "PID.NAME<TAB>STATE" for every live session; dead ones are wiped.
sessions() {
    local line target state i
    local -a fields targets=() states=()
    local -A seen=()
    while IFS= read -r line; do
        line=${line%$'\r'}
        [[ $line == $'\t'* ]] || continue
        IFS=$'\t' read -r -a fields <<<"${line#$'\t'}"
        target=${fields[0]}
        [[ $target =~ ^[0-9]+\. ]] || continue
        state=${fields[${#fields[@]} - 1]}
        state=${state#(}
        state=${state%)}
        targets+=("$target")
        states+=("$state")
        seen[$target]=1
    done < <(screen -ls 2>&1 || true) # -ls exits 1 even when sessions exist
    for i in "${!targets[@]}"; do
        target=${targets[$i]}
        state=${states[$i]}
        # screen -Q answers through a temporary socket PID.NAME-queryX: not a session
        if [[ $target =~ -query[A-Za-z]$ && -n ${seen[${target%-query?}]:-} ]]; then
            continue
        fi
        if [[ $state == *[Dd]ead* ]]; then
            screen_alive "${target%%.*}" || screen -wipe "$target" >/dev/null 2>&1 || true
            continue
        fi
        printf '%s\t%s\n' "$target" "$state"
    done
}

# Print the PID.NAME of every live session named exactly $1.
targets_of() {
    local target state
    while IFS=$'\t' read -r target state; do
        [[ ${target#*.} == "$1" ]] && printf '%s\n' "$target"
    done < <(sessions)
    return 0
}

# The one session named exactly $1, or exit 1.
target_of() {
    local -a found
    mapfile -t found < <(targets_of "$1")
    ((${#found[@]} > 0)) || die 1 "no screen session named '$1'"
    ((${#found[@]} == 1)) || die 1 "${#found[@]} screen sessions are named '$1' (${found[*]}); kill the extra ones"
    printf '%s\n' "${found[0]}"
}

# A private (0700) temporary directory whose path screen's command parser leaves alone.
private_tmpdir() {
    local base=${TMPDIR:-/tmp}
    [[ $base =~ ^[A-Za-z0-9_./-]+$ ]] || base=/tmp
    (umask 077 && mktemp -d "$base/screen_script.XXXXXX")
}

# Wait until the session's window shows something (its shell's prompt): text typed earlier
# may be lost. screen -X returns before the server has run the command, so each hardcopy is
# waited for (screen -Q is not used: its temporary socket confuses a concurrent screen -ls).
wait_ready() {
    local target=$1 dir i copy=""
    dir=$(private_tmpdir)
    for ((i = 0; i < READY_TRIES; i++)); do
        if [[ -z $copy || -e $copy ]]; then # ask for a fresh hardcopy
            copy=$dir/hardcopy$i
            if ! screen -S "$target" -X hardcopy "$copy" >/dev/null 2>&1; then
                rm -rf "$dir"
                die 1 "screen session '${target#*.}' ended right after it started"
            fi
        fi
        sleep 0.05
        if [[ -s $copy ]] && grep -q '[^[:space:]]' "$copy"; then
            rm -rf "$dir"
            return 0
        fi
    done
    rm -rf "$dir"
    return 0 # a shell without a prompt: go on
}

# Start session $1 (optionally logging to $2) and wait until it is ready; print PID.NAME.
start_session() {
    local name=$1 log=${2:-} target i
    local -a args=(-dmS "$name")
    [[ -z $(targets_of "$name") ]] || die 1 "screen session '$name' already exists"
    if [[ -n $log ]]; then
        args=(-L -Logfile "${log//%/%%}" "${args[@]}") # screen expands % escapes in log names
    fi
    screen "${args[@]}" >&2 || die 1 "screen could not create session '$name'"
    target=""
    for ((i = 0; i < READY_TRIES; i++)); do # -dm returns before the socket exists
        target=$(targets_of "$name")
        [[ -n $target ]] && break
        sleep 0.05
    done
    [[ -n $target ]] || die 1 "screen session '$name' did not start"
    if [[ -n $log ]]; then
        screen -S "$target" -X logfile flush 0 # default: flushed every 10 s
    fi
    wait_ready "$target"
    printf '%s\n' "$target"
}

kill_session() {
    local name=$1 target i
    local -a found
    mapfile -t found < <(targets_of "$name")
    ((${#found[@]} > 0)) || die 1 "no screen session named '$name'"
    for target in "${found[@]}"; do
        screen -S "$target" -X quit >/dev/null 2>&1 || true
    done
    for ((i = 0; i < READY_TRIES; i++)); do
        [[ -z $(targets_of "$name") ]] && return 0
        sleep 0.05
    done
    die 1 "screen session '$name' did not end"
}

cmd_list() {
    local target state
    while IFS=$'\t' read -r target state; do
        printf '%s\t%s\t%s\n' "${target#*.}" "${target%%.*}" "$state"
    done < <(sessions)
}

cmd_create() {
    local target
    target=$(start_session "$1")
    echo "created screen session '$1' ($target)"
}

cmd_kill() {
    kill_session "$1"
    echo "killed screen session '$1'"
}

cmd_detach() {
    local target state
    target=$(target_of "$1")
    state=$(sessions | awk -F '\t' -v t="$target" '$1 == t { print $2 }')
    if [[ ${state,,} != *attached* ]]; then # "Attached", "Multi, attached"
        echo "screen session '$1' is not attached"
        return 0
    fi
    screen -d "$target" >/dev/null 2>&1 || die 1 "could not detach screen session '$1'"
    echo "detached screen session '$1'"
}

# Type $2 into session PID.NAME $1, whole, then press Enter. Pieces of 1000 characters:
# screen 4.9 spins when it pastes more than about 4 KiB at once. Each piece is one server
# command (not interleaved with another sender's text), and writebuf echoes it back once it
# has been typed, so the file is not removed before screen has read it.
send_line() {
    local target=$1 text=$2 dir i offset piece
    local -a enter=()
    [[ -n $text ]] || {
        screen -S "$target" -X stuff $'\r'
        return
    }
    dir=$(private_tmpdir)
    for ((offset = 0; offset < ${#text}; offset += 1000)); do
        piece=${text:offset:1000}
        ((offset + 1000 < ${#text})) || enter=('stuff \015')
        printf '%s' "$piece" >"$dir/text"
        rm -f "$dir/echo"
        if ! screen -S "$target" -X eval "readbuf $dir/text" "paste ." "${enter[@]}" "writebuf $dir/echo"; then
            rm -rf "$dir"
            return 1
        fi
        for ((i = 0; ; i++)); do
            cmp -s "$dir/text" "$dir/echo" && break
            if ((i >= READY_TRIES)); then
                rm -rf "$dir"
                return 1
            fi
            sleep 0.05
        done
    done
    rm -rf "$dir"
}

cmd_send() {
    local name=$1 text=$2 target
    target=$(target_of "$name")
    send_line "$target" "$text" || die 1 "could not send to screen session '$name'"
    echo "sent ${#text} characters to '$name'"
}

# True when group $2 is the private group of user $1: same name, the user's primary group,
# nobody else in it (Fedora and Debian give users one, with umask 002: their folders are 0775).
private_group() {
    local user name gid members
    IFS=: read -r user _ _ gid _ < <(getent passwd "$1") || return 1
    IFS=: read -r name _ _ members < <(getent group "$2") || return 1
    [[ $gid == "$2" && $name == "$user" && (-z $members || $members == "$user") ]]
}

# Refuse log folder $1 (absolute, links resolved) unless only this user and root can change it
# and every folder above it (others may write to one only if it is sticky, like /tmp): screen
# opens the log by its path, and whoever can write to one of them could put a link there.
check_log_dir() {
    local dir=$1 path=$1 uid gid mode owner where open
    while :; do
        read -r uid gid mode owner < <(stat -c '%u %g %a %U' -- "$path") ||
            die 1 "cannot check log folder $path"
        where=""
        [[ $path == "$dir" ]] || where="$path is "
        if ((uid != EUID && uid != 0)); then
            die 1 "refusing log folder $dir: ${where}owned by user $owner, not by you"
        fi
        open=$((8#$mode & 8#002))
        if ((8#$mode & 8#020)) && ! private_group "$uid" "$gid"; then
            open=1
        fi
        if ((open && !(8#$mode & 8#1000))); then
            die 1 "refusing log folder $dir: ${where}writable by other users (mode $(printf '%04o' "$((8#$mode))"))"
        fi
        [[ $path == / ]] && return 0
        path=${path%/*}
        path=${path:-/}
    done
}

# Refuse log file $1 if it is a link, or not a regular file of this user's: screen would
# append to whatever it leads to.
check_log_file() {
    local log=$1
    [[ ! -L $log ]] || die 1 "refusing log file $log: it is a symbolic link (not followed)"
    [[ -e $log ]] || return 0
    [[ -f $log ]] || die 1 "refusing log file $log: it is not a regular file"
    [[ -O $log ]] || die 1 "refusing log file $log: it is owned by user $(stat -c %U -- "$log"), not by you"
}

cmd_recreate() {
    local name=$1 dir log target
    dir=${SCREEN_LOG_DIR:-./logs}
    (umask 077 && mkdir -p -- "$dir") || die 1 "cannot create log directory $dir"
    dir=$(cd -P -- "$dir" && pwd -P) || die 1 "cannot enter log directory $dir"
    check_log_dir "$dir" # screen runs elsewhere: the log path is absolute, links resolved
    log=$dir/$name.log
    check_log_file "$log"
    if [[ ! -e $log ]]; then # new: created here, 0600, never through a link (noclobber: O_EXCL)
        (umask 077 && set -o noclobber && : >"$log") || die 1 "cannot create log file $log"
    fi
    if [[ -n $(targets_of "$name") ]]; then
        kill_session "$name"
    fi
    target=$(start_session "$name" "$log")
    echo "recreated screen session '$name' ($target), logging to $log"
}

main() {
    local action=${1:-}
    [[ -n $action ]] || {
        usage >&2
        exit 2
    }
    shift
    case $action in
    -h | --help)
        usage
        return 0
        ;;
    -l) (($# == 0)) || die 2 "-l takes no arguments" ;;
    -c | -k | -d | -r)
        check_name "${1:-}"
        (($# == 1)) || die 2 "$action takes one argument: NAME"
        ;;
    -s)
        check_name "${1:-}"
        (($# >= 2)) || die 2 "missing command: -s NAME COMMAND"
        (($# == 2)) || die 2 "-s takes two arguments: NAME COMMAND (quote the command)"
        ;;
    *) die 2 "unknown option '$action' (see -h)" ;;
    esac
    require_screen
    case $action in
    -l) cmd_list ;;
    -c) cmd_create "$1" ;;
    -k) cmd_kill "$1" ;;
    -d) cmd_detach "$1" ;;
    -s) cmd_send "$1" "$2" ;;
    -r) cmd_recreate "$1" ;;
    esac
}

main "$@"
